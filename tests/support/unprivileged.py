"""Run the real agent (or a snippet) as another, unprivileged user: queue files left by a root run.

The interpreter may live where that user cannot read it (pyenv under /root, mode 0700), so the child starts
as root, imports everything the agent loads, and only then drops to the user; from there on every file the
agent opens (model, audio, queue) is opened with that user's rights, as on a sensor.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What ``earshot agent`` imports lazily; loaded before the drop because site-packages may be unreadable.
_PRELOAD = textwrap.dedent("""
    import encodings.idna, json, logging.handlers, sqlite3, fcntl, http.server, wsgiref.simple_server
    import numpy, numpy.fft, onnxruntime, soundfile, paho.mqtt.client, prometheus_client
    import edge_agent.agent_cli, edge_agent.cli, edge_agent.onnx_model, edge_agent.pipeline
    import edge_agent.sources, edge_agent.model_reload, edge_agent.http_server, edge_agent.publishers
    import edge_agent.publishers.mqtt, edge_agent.publishers.webhook, edge_agent.publishers.stdout
    import edge_agent.publishers.disk_queue
""")


def drop_reason() -> str | None:
    """Why this host cannot run code as another user (None when it can): it needs root and ``nobody``."""
    if os.geteuid() != 0:
        return "needs root, to leave files owned by another user and to run the agent as 'nobody'"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "no 'nobody' user to run the agent as"
    return None


def nobody() -> tuple[int, int]:
    """uid and gid of ``nobody``."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def run_as_nobody(
    code: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as ``nobody`` (after the preloads), from the repository root."""
    uid, gid = nobody()
    drop = f"import os\nos.setgroups([])\nos.setgid({gid})\nos.setuid({uid})\n"
    script = _PRELOAD + drop + textwrap.dedent(code)
    # A home of its own: the preloads run as root and onnxruntime writes under $HOME/.cache at import,
    # which must not leave root-owned files in a shared place (it once created /nonexistent/.cache).
    with tempfile.TemporaryDirectory(prefix="earshot-nobody-home-") as home:
        os.chmod(home, 0o777)
        full_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HOME": home,
            "XDG_CACHE_HOME": f"{home}/.cache",
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def agent_as_nobody(
    argv: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """``earshot agent ARGV`` as ``nobody``: the same entry point as ``python -m edge_agent.cli agent``."""
    code = f"import sys\nfrom edge_agent.cli import main\nsys.exit(main(['agent', *{argv!r}]))\n"
    return run_as_nobody(code, env, timeout)


@contextmanager
def world_readable_dir() -> Iterator[Path]:
    """A fresh directory under the system temp dir that ``nobody`` can enter (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="earshot-unpriv-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
