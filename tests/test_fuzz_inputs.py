"""Bad input never gives a traceback or a hang: odd, broken and hostile audio files, malformed config,
malformed and oversized MQTT credentials. Each has a clear one-line error or a defined behaviour.

Whole-CLI cases run the real ``earshot agent`` in a subprocess with a timeout (a hang fails the test);
hypothesis cases call the same ``main`` in-process so that a few dozen examples stay fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.mosquitto import Mosquitto, mosquitto_binary
from support.onnx_models import noise, silence, siren_sweep, write_audio

from edge_agent import agent_cli
from edge_agent.config import SECTIONS

ROOT = Path(__file__).resolve().parents[1]
ONE_LINE_ERROR = "earshot agent: "
RUN_TIMEOUT_S = 60  # a hang shows up as subprocess.TimeoutExpired


def siren_clip(rate: int = 16000) -> np.ndarray:
    """1 s of quiet noise, 3 s of siren, 3 s of quiet noise."""
    return np.concatenate(
        [
            noise(1.0, rate, 0.05),
            siren_sweep(3.0, rate) + noise(3.0, rate, 0.05, seed=1),
            noise(3.0, rate, 0.05, seed=2),
        ]
    )


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``earshot agent`` in a fresh process, as a user runs it (default log level)."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "agent", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def kinds(result: subprocess.CompletedProcess) -> list[str]:
    """(label kind) of each event line on stdout."""
    return [f"{e['label']} {e['kind']}" for e in map(json.loads, result.stdout.splitlines())]


def assert_one_line_error(result: subprocess.CompletedProcess | tuple[int, str], *fragments: str) -> str:
    """Exit 2 and exactly one stderr line, starting ``earshot agent: `` and holding every fragment."""
    code, stderr = (result.returncode, result.stderr) if not isinstance(result, tuple) else result
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith(ONE_LINE_ERROR) and all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Error:" not in stderr.replace("earshot agent:", ""), stderr[-3000:]


# --- audio files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every odd audio file, written once."""
    d = tmp_path_factory.mktemp("odd-audio")
    whole = write_audio(d / "whole.wav", siren_clip())
    data = whole.read_bytes()
    out = {"whole": whole}
    for name, content in {
        "truncated": data[: len(data) // 2],
        "header_only": data[:30],
        "empty": b"",
        "random": np.random.default_rng(0).bytes(5000),
    }.items():
        out[name] = d / f"{name}.wav"
        out[name].write_bytes(content)
    out["rate_7350"] = write_audio(d / "r7350.wav", siren_clip(7350), 7350)
    out["stereo_44k1"] = write_audio(d / "st44.flac", np.stack([siren_clip(44100)] * 2, axis=1), 44100)
    for name, rate, bad in (("nan", 16000, np.nan), ("nan_44k1", 44100, np.nan), ("inf", 16000, np.inf)):
        samples = siren_clip(rate)
        samples[int(0.3 * rate) : int(0.9 * rate)] = bad  # in the noise before the siren
        samples[10] = -bad
        out[name] = write_audio(d / f"{name}.wav", samples, rate, subtype="FLOAT")
    out["silence"] = write_audio(d / "silence.wav", silence(5.0))
    clipped_siren = np.clip(8 * siren_sweep(3.0), -1.0, 1.0)  # a square-ish wave at full scale
    out["clipped"] = write_audio(
        d / "clipped.wav",
        np.concatenate([noise(1.0, amplitude=0.05), clipped_siren, noise(3.0, amplitude=0.05)]),
    )
    out["over_full_scale"] = write_audio(d / "hot.wav", 8 * siren_clip(), subtype="FLOAT")  # floats > 1
    out["no_frames"] = write_audio(d / "zero.wav", np.zeros(0, np.float32))
    out["shorter_than_a_window"] = write_audio(d / "tiny.wav", noise(0.1))
    return out


SIREN = ["siren start", "siren end"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("whole", SIREN),
        ("truncated", SIREN),  # a WAV cut mid-stream: the part that is there is classified
        ("rate_7350", SIREN),  # resampled to the model's 16 kHz
        ("stereo_44k1", SIREN),
        ("nan", SIREN),  # NaN/Inf stretches cost their own windows, not the rest of the stream
        ("nan_44k1", SIREN),
        ("inf", SIREN),
        ("silence", []),
        ("clipped", SIREN),
        ("over_full_scale", SIREN),
        ("no_frames", []),
        ("shorter_than_a_window", []),
    ],
)
def test_odd_audio_has_a_defined_outcome(
    name: str, expected: list[str], files: dict[str, Path], siren_model: Path
) -> None:
    result = agent("--source", str(files[name]), "--model", str(siren_model), "--fast", "--mqtt", "none")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_traceback(result.stderr)
    assert kinds(result) == expected


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("header_only", "No 'data' chunk"),
        ("empty", "Format not recognised"),
        ("random", "Format not recognised"),
    ],
)
def test_unreadable_audio_is_one_line(
    name: str, fragment: str, files: dict[str, Path], siren_model: Path
) -> None:
    result = agent("--source", str(files[name]), "--model", str(siren_model), "--fast", "--mqtt", "none")
    assert_one_line_error(result, f"cannot read audio file {files[name]}", fragment)


def test_infinite_samples_print_no_numpy_warnings(files: dict[str, Path], siren_model: Path) -> None:
    result = agent("--source", str(files["inf"]), "--model", str(siren_model), "--fast", "--mqtt", "none")
    assert "RuntimeWarning" not in result.stderr, result.stderr[-2000:]


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """stdout and stderr of an in-process ``main`` call (threads' excepthook output included)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(buffer):
        yield buffer


def run_in_process(*argv: str) -> tuple[int, str]:
    """``earshot agent`` in this process: (exit code, stderr); any escaping exception fails the test."""
    with captured() as stderr:
        try:
            code = agent_cli.main(list(argv))
        except SystemExit as exit_:  # argparse's own usage errors
            code = int(exit_.code or 0)
    return code, stderr.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=0, max_size=4096), keep_header=st.sampled_from([0, 12, 44]))
def test_random_bytes_as_a_wav_file(
    junk: bytes, keep_header: int, files: dict[str, Path], siren_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "fuzz.wav"
    path.write_bytes(files["whole"].read_bytes()[:keep_header] + junk)
    code, stderr = run_in_process(
        "--source", str(path), "--model", str(siren_model), "--fast", "--mqtt", "none", "--log-level", "ERROR"
    )
    assert_no_traceback(stderr)
    assert code in (0, 1, 2), stderr
    if code:
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith(ONE_LINE_ERROR), stderr


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[audio\nsource = 'x'", ("invalid TOML",)),
        ("[audio]\nsource = ", ("invalid TOML",)),
        ("[audoi]\nsource = 'mic'", ("audoi: unknown setting",)),
        ("[audio]\nsorce = 'mic'", ("audio.sorce",)),
        ("[audio]\nhop_seconds = 'fast'", ("audio.hop_seconds: must be a number",)),
        ("[audio]\nhop_seconds = nan", ("audio.hop_seconds",)),
        ("[detector.thresholds]\nsiren = inf", ("detector.thresholds.siren",)),
        ("[detector]\nconfirm_n = 5\nconfirm_m = 3", ("detector.confirm_m",)),
        ("[mqtt]\nurl = 'http://example.org'", ("mqtt.url",)),
        ("audio = 3", ("audio: must be a table",)),
    ],
)
def test_malformed_config_is_one_line(text: str, fragments: tuple[str, ...], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(text.encode("latin-1"))
    assert_one_line_error(run_in_process("--check-config", str(path)), *fragments)


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"device_id = '\xe9t\xe9'\n")
    code, stderr = run_in_process("--check-config", str(path))  # raises UnicodeDecodeError today
    assert_one_line_error((code, stderr), "config file")


def toml_value(value: object) -> str:
    """A Python scalar or list as a TOML value (json.dumps strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    # Non-ASCII raw (TOML has no surrogate-pair escapes); DEL escaped (JSON leaves it raw, TOML forbids it).
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


KEYS = sorted(
    (section, key)
    for section, cls in SECTIONS.items()
    for key in cls.__dataclass_fields__
    if key not in ("thresholds",)
)
VALUES = st.one_of(
    st.integers(-(10**7), 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=30),
    st.lists(st.text(max_size=8), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4, unique_by=lambda entry: entry[0]
    )
)
def test_random_config_values_are_accepted_or_named(entries: list, tmp_path: Path) -> None:
    by_section: dict[str, list[str]] = {}
    for (section, key), value in entries:
        by_section.setdefault(section, []).append(f"{key} = {toml_value(value)}")
    path = tmp_path / "random.toml"
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in by_section.items()))
    code, stderr = run_in_process("--check-config", str(path))
    if code == 0:
        return
    line = assert_one_line_error((code, stderr))
    # The message names a key of a section we wrote (a cross-key rule may name the key's partner).
    sections = {section for (section, _), _ in entries}
    assert any(line.startswith(f"{ONE_LINE_ERROR}{section}.") for section in sections), (line, entries)


# --- MQTT credentials ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real mosquitto that wants user ``sensor`` with password ``right``."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    directory = tmp_path_factory.mktemp("auth-broker")
    passwords = directory / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "sensor", "right"], check=True, capture_output=True
    )
    passwords.chmod(0o600)
    broker = Mosquitto(directory / "broker", extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    yield broker
    broker.stop()


def credential_run(
    broker: Mosquitto, tmp_path: Path, siren_model: Path, clip: Path, username: str, password: str
) -> subprocess.CompletedProcess:
    """The agent on ``clip`` with these credentials (password from a file, as deployed)."""
    password_file = tmp_path / "password"
    password_file.write_text(password)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[mqtt]\nurl = "{broker.url}"\nusername = {json.dumps(username)}\n'
        f'password_file = "{password_file}"\n[queue]\ndir = "{tmp_path / "queue"}"\n'
    )
    return agent(
        "--source",
        str(clip),
        "--model",
        str(siren_model),
        "--config",
        str(config),
        "--fast",
        env={"EARSHOT_MQTT_RECONNECT_MIN_S": "0.1", "EARSHOT_MQTT_RECONNECT_MAX_S": "0.5"},
    )


def test_wrong_password_keeps_classifying_warns_and_never_logs_it(
    auth_broker: Mosquitto, tmp_path: Path, siren_model: Path, files: dict[str, Path]
) -> None:
    secret = "wrong-but-secret-Pa55"
    result = credential_run(auth_broker, tmp_path, siren_model, files["whole"], "sensor", secret)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_traceback(result.stderr)
    assert kinds(result) == SIREN  # classification goes on; the events wait in the disk queue
    assert "refused the connection" in result.stderr and "2 events left in the disk queue" in result.stderr
    assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize("field", ["password", "username"])
def test_oversized_credentials_are_a_one_line_config_error(
    field: str, auth_broker: Mosquitto, tmp_path: Path, siren_model: Path, files: dict[str, Path]
) -> None:
    huge = "P" * 100_000
    username, password = (huge, "right") if field == "username" else ("sensor", huge)
    result = credential_run(
        auth_broker, tmp_path, siren_model, files["shorter_than_a_window"], username, password
    )
    assert huge[:100] not in result.stderr
    assert_one_line_error(result, f"mqtt.{field}")


@pytest.mark.parametrize("username", ["sen\x00sor", "sen\nsor"], ids=["nul", "newline"])
def test_control_characters_in_the_username_are_a_one_line_config_error(
    username: str, auth_broker: Mosquitto, tmp_path: Path, siren_model: Path, files: dict[str, Path]
) -> None:
    result = credential_run(
        auth_broker, tmp_path, siren_model, files["shorter_than_a_window"], username, "right"
    )
    assert_one_line_error(result, "mqtt.username")
