"""A real Prometheus server scrapes a running ``earshot agent`` and answers queries about it, with the
deploy kit's alert rules loaded and every Grafana dashboard expression evaluated. The agent delivers its
events to a webhook served by the test, so the per-output series carry real values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from support.mosquitto import free_port, wait_for_port
from support.onnx_models import band_energy_model, noise, siren_sweep, write_audio, write_card

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
WAIT_S = 30.0  # every wait is bounded; a scrape every second leaves plenty of margin

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="the prometheus server is missing: apt-get install prometheus"
)


def stop(process: subprocess.Popen) -> None:
    """Terminate, then kill if it lingers; never leave a server behind."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Accept(BaseHTTPRequestHandler):
    """A webhook endpoint that takes every event (204)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the agent's metrics, not the server's log."""


@pytest.fixture(scope="module")
def webhook() -> Iterator[str]:
    """A local HTTP endpoint for the agent's webhook output; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/earshot"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, webhook: str) -> Iterator[int]:
    """``earshot agent`` paced in real time on noise, a 4 s siren, then noise, posting its events to
    ``webhook``; yields its /metrics port."""
    tmp_path = tmp_path_factory.mktemp("agent")
    model = band_energy_model(tmp_path / "tiny.onnx")
    write_card(model, gate=True)
    audio = np.concatenate(
        [noise(2.0, amplitude=0.02, seed=1), siren_sweep(4.0), noise(40.0, amplitude=0.02, seed=2)]
    )
    recording = write_audio(tmp_path / "siren.wav", audio)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "agent",
        "--source",
        str(recording),
        "--model",
        str(model),
        "--mqtt",
        "none",
        "--metrics-port",
        str(port),
    ]
    env = {
        **os.environ,
        "EARSHOT_DEVICE_ID": "scrape-test",
        "EARSHOT_WEBHOOK_URL": webhook,
        "EARSHOT_QUEUE_DIR": str(tmp_path / "queue"),
    }
    # Logs go to files: an unread pipe could fill up and stall the process under test.
    with open(tmp_path / "agent.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for_port(port, timeout=WAIT_S)
        yield port
    finally:
        stop(process)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, agent: int) -> Iterator[str]:
    """A Prometheus server on loopback scraping the agent every second, with the deploy kit's alert rules."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {tmp_path / 'alerts.yml'}\n"
        "scrape_configs:\n  - job_name: earshot\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{agent}']\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed when the server stops
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_for_port(port, timeout=WAIT_S)
        wait_until_ready(f"http://127.0.0.1:{port}", process, tmp_path / "prometheus.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


def wait_until_ready(base: str, process: subprocess.Popen, log: Path) -> None:
    """Prometheus listens before it can answer queries; /-/ready says 200 once it can."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready after {WAIT_S} s")


def api(base: str, path: str, **params: str) -> dict:
    """GET a Prometheus HTTP API endpoint; returns its ``data`` (raises on an API error)."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def query(base: str, expr: str) -> list[dict]:
    """Instant query; the result vector."""
    return api(base, "/api/v1/query", query=expr)["result"]


def wait_for_value(base: str, expr: str, wanted: float) -> float:
    """Poll an instant query until its single value equals ``wanted``; returns it."""
    deadline, last = time.monotonic() + WAIT_S, None
    while time.monotonic() < deadline:
        result = query(base, expr)
        last = float(result[0]["value"][1]) if len(result) == 1 else None
        if last == wanted:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{expr} = {last} after {WAIT_S} s, wanted {wanted}")


def test_prometheus_scrapes_the_running_agent(prometheus: str) -> None:
    assert wait_for_value(prometheus, 'up{job="earshot"}', 1.0) == 1.0
    # The siren sweep starts one detection; Prometheus reads it from the agent's /metrics.
    assert wait_for_value(prometheus, 'earshot_detections_total{label="siren"}', 1.0) == 1.0
    audio = query(prometheus, "earshot_audio_seconds_total")
    assert float(audio[0]["value"][1]) > 2.0
    info = query(prometheus, "earshot_model_info")
    assert info[0]["metric"]["name"] == "band-energy" and len(info[0]["metric"]["sha256"]) == 64
    assert query(prometheus, "earshot_model_ungated")[0]["value"][1] == "0"
    # The start and end events reached the webhook; its series carry the output label.
    assert wait_for_value(prometheus, 'earshot_events_delivered_total{output="webhook"}', 2.0) == 2.0
    assert query(prometheus, 'earshot_queue_depth{output="webhook"}')[0]["value"][1] == "0"
    # Sound levels (issue 13): the noise at amplitude 0.02 reads -30.8 dB(A) re full scale, uncalibrated.
    laeq = float(query(prometheus, 'earshot_sound_level_db{weighting="A", stat="eq_1s"}')[0]["value"][1])
    assert -40.0 < laeq < -20.0, laeq
    assert float(query(prometheus, "earshot_sound_level_laeq_1s_db_count")[0]["value"][1]) >= 2
    assert query(prometheus, "earshot_sound_level_calibrated")[0]["value"][1] == "0"


def dashboard_queries() -> list[str]:
    """Every dashboard expression with Grafana's variables filled in as Grafana would."""
    board = json.loads((DEPLOY / "grafana" / "earshot-dashboard.json").read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    return [expr.replace("$instance", ".*").replace("$__range", "1h") for expr in exprs]


def test_dashboard_and_alert_expressions_run_on_the_real_server(prometheus: str) -> None:
    wait_for_value(prometheus, 'up{job="earshot"}', 1.0)
    wait_for_value(prometheus, 'earshot_detections_total{label="siren"}', 1.0)
    # rate() and increase() need at least two scrapes of a series; wait for a few.
    wait_for_value(prometheus, 'count_over_time(up{job="earshot"}[5m]) >= bool 4', 1.0)
    empty = [expr for expr in dashboard_queries() if not query(prometheus, expr)]
    assert not empty, f"dashboard queries without data: {empty}"
    rules = api(prometheus, "/api/v1/rules")["groups"][0]["rules"]
    assert len(rules) == 10 and all(rule["health"] == "ok" for rule in rules), rules
    firing = {alert["labels"]["alertname"] for alert in api(prometheus, "/api/v1/alerts")["alerts"]}
    assert not firing & {"EarshotAgentDown", "EarshotAudioStalled", "EarshotModelUngated"}
