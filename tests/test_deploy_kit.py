"""The operator's deploy kit: systemd unit, install script, example config and the pi-check helpers."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from support.wheel import build_wheel

from edge_agent.config import SECTIONS, AgentConfig, default_device_id, load_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "earshot-agent.service"
INSTALL = DEPLOY / "install.sh"
EXAMPLE = DEPLOY / "config.example.toml"
# Keys that must never appear in the example: secrets come from the environment or a file.
SECRET_KEYS = {"mqtt.password", "webhook.token"}


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> values of a systemd unit file (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_restarts_always_and_is_hardened() -> None:
    settings = unit_settings(UNIT.read_text())
    expected = {
        "Restart": "always",
        "User": "earshot",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "SupplementaryGroups": "audio",
        "ReadWritePaths": "/var/lib/earshot",
        "EnvironmentFile": "-/etc/earshot/earshot.env",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    families = settings["RestrictAddressFamilies"][0].split()
    assert set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert settings["ExecStart"] == ["/opt/earshot/venv/bin/earshot agent --config /etc/earshot/config.toml"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists; the venv does not here, so point it at a real one.
    unit = tmp_path / UNIT.name
    true = shutil.which("true") or "/bin/true"
    unit.write_text(UNIT.read_text().replace("/opt/earshot/venv/bin/earshot", true))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "earshot-agent.service" not in result.stderr  # no warnings about our unit either


def documented_keys(text: str) -> set[str]:
    """'section.key' for every key the example sets or shows commented out."""
    keys, section = set(), ""
    for line in text.splitlines():
        header = re.match(r"^\[([a-z_.]+)\]", line)
        if header:
            section = header.group(1)
            continue
        assignment = re.match(r"^#?\s?([a-z_]+) = ", line)
        if assignment:
            keys.add(f"{section}.{assignment.group(1)}" if section else assignment.group(1))
    return keys


def config_keys() -> set[str]:
    """Every 'section.key' of the agent's config tree."""
    keys = {f.name for f in dataclasses.fields(AgentConfig) if f.name not in SECTIONS}
    for name, cls in SECTIONS.items():
        keys |= {f"{name}.{field}" for field in typing.get_type_hints(cls)}
    return keys


def test_example_config_documents_every_key() -> None:
    documented = documented_keys(EXAMPLE.read_text())
    # detector.thresholds is a table: its keys are labels, documented as [detector.thresholds].
    documented = {key.replace("detector.thresholds.", "detector.thresholds|") for key in documented}
    documented = {key.split("|")[0] for key in documented}
    missing = config_keys() - SECRET_KEYS - documented
    assert not missing, f"undocumented config keys: {sorted(missing)}"
    unknown = documented - config_keys()
    assert not unknown, f"example documents keys the agent does not have: {sorted(unknown)}"
    assert not documented & SECRET_KEYS


def test_example_config_loads_with_the_agents_loader() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.device_id == default_device_id()  # unset: each sensor takes its own host name
    assert config.mqtt.tls and config.queue.dir.startswith("/var/lib/earshot/")  # the unit can write there
    assert config.metrics.host == "127.0.0.1"
    assert config.capture.enabled is False and config.capture.dir.startswith("/var/lib/earshot/")
    assert not config.webhook.enabled and config.stdout.enabled  # the webhook is an example, commented out


def test_example_config_passes_the_agents_check_config_command() -> None:
    # What install.sh runs before enabling the service.
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "agent", "--check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["queue"]["dir"] == "/var/lib/earshot/queue"


def test_example_config_with_every_commented_key_enabled_still_loads(tmp_path: Path) -> None:
    # The commented-out lines are documentation an operator will uncomment; they must be valid too.
    lines = [re.sub(r"^# ?([a-z_]+ = )", r"\1", line) for line in EXAMPLE.read_text().splitlines()]
    uncommented = tmp_path / "all.toml"
    uncommented.write_text("\n".join(lines) + "\n")
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "token").write_text("tok-s3cret\n")
    text = uncommented.read_text().replace('"/etc/earshot/mqtt-password"', f'"{tmp_path / "pw"}"')
    text = text.replace('"/etc/earshot/webhook-token"', f'"{tmp_path / "token"}"')
    uncommented.write_text(text)
    config = load_config(uncommented, environ={})
    assert config.mqtt.tls_cert and config.mqtt.tls_key and config.model.path
    assert config.mqtt.password == "s3cret"
    assert config.webhook.enabled and config.webhook.token == "tok-s3cret" and config.webhook.tls_ca


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run deploy/install.sh into ``root``; --root comes first so no argument slip makes a live install."""
    return subprocess.run(
        ["sh", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["--device-id"], "--device-id needs a value"),
        (["--device-id", "--dry-run"], "--device-id needs a value, got option '--dry-run'"),
        (["--device-id", "lamp post/7"], "--device-id must be letters"),
        (["--device-id", "x" * 65], "longer than 64"),
        (["--prefix", "relative/dir"], "--prefix must be an absolute path"),
    ],
)
def test_install_rejects_bad_arguments_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_install(tmp_path / "pi", "--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_install_dry_run_changes_nothing_and_skips_the_live_system(tmp_path: Path) -> None:
    root = tmp_path / "pi"
    result = run_install(root, "--dry-run", "--device-id", "lamp-7")
    assert result.returncode == 0, result.stderr
    assert not root.exists()
    out = result.stdout
    assert "device_id=lamp-7" in out
    for skipped in ("install system packages", "create system user earshot", "reload systemd"):
        assert f"skip (--root): {skipped}" in out
    assert f"would run: mkdir -p {root}/var/lib/earshot" in out


@pytest.fixture(scope="module")
def earshot_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, so the installer's venv needs no network."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.slow
def test_install_into_a_root_writes_unit_config_venv(tmp_path: Path, earshot_wheel: Path) -> None:
    root = tmp_path / "pi"
    args = [
        "--device-id",
        "lamp-7",
        "--prefix",
        "/srv/earshot",
        "--source",
        str(earshot_wheel),
        "--pip-args",
        "--no-deps --no-index",
    ]
    result = run_install(root, *args)
    assert result.returncode == 0, result.stderr
    config = load_config(root / "etc/earshot/config.toml", environ={})
    assert config.device_id == "lamp-7"
    unit = unit_settings((root / "etc/systemd/system/earshot-agent.service").read_text())
    assert unit["ExecStart"][0].startswith("/srv/earshot/venv/bin/earshot agent")
    venv = root / "srv/earshot/venv"
    assert (venv / "bin/earshot").exists()
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "edge_agent").is_dir() and not (site / "torch").exists()
    env_file = root / "etc/earshot/earshot.env"
    assert env_file.stat().st_mode & 0o777 == 0o640 and "EARSHOT_MQTT_PASSWORD" in env_file.read_text()
    assert "EARSHOT_WEBHOOK_TOKEN" in env_file.read_text()
    assert (root / "var/lib/earshot").is_dir()
    # A second run keeps the operator's edited config unless --force-config.
    (root / "etc/earshot/config.toml").write_text('device_id = "edited"\n')
    assert run_install(root, *args).returncode == 0
    assert load_config(root / "etc/earshot/config.toml", environ={}).device_id == "edited"


def load_pi_check():
    """Import deploy/pi-check (a script without .py) as a module."""
    loader = importlib.machinery.SourceFileLoader("pi_check", str(DEPLOY / "pi-check"))
    spec = importlib.util.spec_from_loader("pi_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_pi_check_compares_events_and_scores_within_tolerance() -> None:
    pi_check = load_pi_check()
    start, end = {"label": "siren", "kind": "start"}, {"label": "siren", "kind": "end"}
    host = [dict(start, score=0.91), dict(end, score=0.2)]
    close = [dict(start, score=0.9102), dict(end, score=0.2)]
    assert pi_check.compare_events(host, close, 1e-3) == []
    assert "score" in pi_check.compare_events(host, [dict(host[0], score=0.8), host[1]], 1e-3)[0]
    assert "sequences differ" in pi_check.compare_events(host, host[:1], 1e-3)[0]
    worst, problems = pi_check.compare_scores([[0.1, 0.9]], [[0.1004, 0.8996]], 1e-3)
    assert worst == pytest.approx(4e-4) and problems == []
    assert pi_check.compare_scores([[0.1, 0.9]], [[0.2, 0.8]], 1e-3)[1]
    assert pi_check.compare_scores([[0.1]], [], 1e-3)[1]


def test_pi_check_parses_agent_stdout_events_only() -> None:
    pi_check = load_pi_check()
    stdout = 'starting\n{"label": "siren", "kind": "start", "score": 0.9}\n{"other": 1}\nnot json {\n'
    assert pi_check.parse_events(stdout) == [{"label": "siren", "kind": "start", "score": 0.9}]


def test_pi_check_bad_arguments_are_one_line(tmp_path: Path) -> None:
    script = str(DEPLOY / "pi-check")
    result = subprocess.run([sys.executable, script, "--tolerance", "5"], capture_output=True, text=True)
    assert result.returncode == 2 and "--tolerance must be in (0, 1)" in result.stderr
    missing = tmp_path / "missing.onnx"
    result = subprocess.run(
        [sys.executable, script, "--model", str(missing), "--recording", str(missing)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.strip() == f"pi-check: not a file: {missing}"


def test_pi_check_scores_windows_on_this_host(tmp_path: Path) -> None:
    import numpy as np
    from support.onnx_models import band_energy_model, noise, siren_sweep, write_audio

    model = band_energy_model(tmp_path / "m.onnx")
    audio = np.concatenate([noise(2.0), siren_sweep(2.0)])
    recording = write_audio(tmp_path / "clip.wav", audio)
    scored = load_pi_check().score_windows(model, recording, 0.25)
    siren = scored["labels"].index("siren")
    scores = np.array(scored["scores"])  # (windows, classes)
    assert scores.shape == (13, len(scored["labels"]))
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert scores[-1, siren] > scores[0, siren] + 0.3  # the sweep scores siren, the noise does not


# --- Prometheus rules and the Grafana dashboard ------------------------------------------------------

PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "earshot-dashboard.json"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is missing: apt-get install prometheus"
)
# Series Prometheus itself adds to every scrape.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
METRIC_NAME = re.compile(r"\b(earshot_[a-z0-9_]+|up)\b(?!\s*\()")


def exposed_metric_names() -> set[str]:
    """Every series name the agent's metrics module exposes (histograms as _bucket/_sum/_count...)."""
    from prometheus_client import CollectorRegistry

    from edge_agent.metrics import AgentMetrics

    suffixes = {
        "counter": ["_total"],
        "gauge": [""],
        "info": ["_info"],
        "histogram": ["_bucket", "_sum", "_count"],
    }
    registry = CollectorRegistry()
    AgentMetrics(registry).define_level_histogram(calibrated=True)  # the agent defines it: levels are on
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def dashboard_exprs() -> list[str]:
    """Every PromQL expression in the dashboard (panels and template variables)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    return exprs


def alert_exprs() -> list[str]:
    """Every alert expression in alerts.yml (promtool checks the YAML; a regex is enough to read it)."""
    return re.findall(r"^\s+expr: (.+)$", (PROMETHEUS / "alerts.yml").read_text(), flags=re.MULTILINE)


def test_the_agent_exposes_every_metric_the_contract_names() -> None:
    contract = set(re.findall(r"^\| `(earshot_[a-z_]+)`", (REPO / "docs/CONTRACTS.md").read_text(), re.M))
    exposed = exposed_metric_names()
    assert contract and all(
        name in exposed or name + "_info" in exposed or name + "_bucket" in exposed for name in contract
    )


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_promql_expr_uses_only_metrics_the_agent_exposes(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert len(exprs) >= 9
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    unknown = used - exposed_metric_names() - PROMETHEUS_BUILTINS
    assert not unknown, f"{source} uses metrics the agent does not expose: {sorted(unknown)}"
    assert len(used) >= 9


def test_dashboard_covers_the_operators_questions() -> None:
    text = " ".join(dashboard_exprs())
    for needed in (
        "earshot_realtime_factor",
        "histogram_quantile(0.95, sum by (le, instance) (rate(earshot_inference_latency_seconds_bucket",
        "earshot_detections_total",
        "earshot_mqtt_connected",
        "earshot_queue_depth",
        "earshot_delivery_latency_seconds_bucket",
        "earshot_queue_dropped_total",
        "earshot_ring_buffer_overruns_total",
        "earshot_last_detection_timestamp_seconds",
        "earshot_sound_level_db",
        "earshot_sound_level_laeq_1s_db_bucket",
    ):
        assert needed in text, needed
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_json_is_what_the_generator_writes() -> None:
    loader = importlib.machinery.SourceFileLoader("make_dashboard", str(DEPLOY / "grafana/make_dashboard.py"))
    spec = importlib.util.spec_from_loader("make_dashboard", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    assert json.loads(DASHBOARD.read_text()) == module.dashboard()


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(PROMETHEUS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_promtool_test_that_fires_it() -> None:
    names = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text()))
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:", tests))
    assert {
        "EarshotAgentDown",
        "EarshotAudioStalled",
        "EarshotRealtimeFactorHigh",
        "EarshotMqttDisconnected",
        "EarshotDeliveryFailing",
        "EarshotQueueGrowing",
        "EarshotEventsDropped",
        "EarshotModelUngated",
    } <= names
    assert names == fired


@needs_promtool
def test_example_scrape_config_passes_promtool(tmp_path: Path) -> None:
    # The example points at /etc/prometheus/earshot/alerts.yml; check it against the checkout's copy.
    config = (PROMETHEUS / "prometheus.example.yml").read_text()
    config = config.replace("/etc/prometheus/earshot/alerts.yml", str(PROMETHEUS / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


PI_ROOT_READY = Path.home() / ".cache" / "earshot" / "pi-root" / ".earshot-root-ready"


@pytest.mark.slow
@pytest.mark.skipif(
    not (PI_ROOT_READY.exists() or os.environ.get("EARSHOT_PI_CHECK") == "1"),
    reason="aarch64 check runs when its cached root exists or EARSHOT_PI_CHECK=1",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="pi-check needs root (chroot, mount)")
def test_pi_check_agrees_with_this_host_on_aarch64(tmp_path: Path) -> None:
    import numpy as np
    from support.onnx_models import band_energy_model, noise, siren_sweep, write_audio, write_card

    model = band_energy_model(tmp_path / "band.onnx")
    write_card(model, gate=True)
    audio = np.concatenate([noise(2.0, amplitude=0.02), siren_sweep(4.0), noise(3.0, amplitude=0.02)])
    recording = write_audio(tmp_path / "siren.wav", audio)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "pi-check"),
            "--model",
            str(model),
            "--recording",
            str(recording),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(report.read_text())
    assert outcome["passed"] and outcome["event_kinds"] == ["siren:start", "siren:end"]
    assert outcome["max_score_diff"] <= outcome["tolerance"]
