"""The README's Home Assistant automation and Node-RED flow against the real payloads (issue 11, item 7).

The older automation syntax also runs in a real Home Assistant 2024.3 in tests/test_home_assistant.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.mosquitto import contract_event

from edge_agent.publishers.ha_discovery import Topics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
NEW_SYNTAX, OLD_SYNTAX = "Home Assistant 2024.10 and later", "Home Assistant before 2024.10"


def _fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _automation(heading: str) -> dict:
    yaml = pytest.importorskip("yaml")
    blocks = [block for block in _fenced("yaml") if block.startswith(f"# {heading}")]
    assert len(blocks) == 1, f"README has no yaml block starting '# {heading}'"
    (automation,) = yaml.safe_load(blocks[0])
    return automation


def test_the_automation_comes_in_both_syntaxes_with_the_version_each_needs() -> None:
    new, old = _automation(NEW_SYNTAX), _automation(OLD_SYNTAX)
    # 2024.10 renamed trigger/condition/action to their plurals and platform to trigger (2024.8: service to
    # action); earlier versions refuse the new keys, later ones still read the old.
    assert {"triggers", "conditions", "actions"} <= set(new)
    assert not {"trigger", "condition", "action"} & set(new)
    assert all(t["trigger"] == "mqtt" for t in new["triggers"]) and new["actions"][0]["action"]
    assert {"trigger", "condition", "action"} <= set(old) and not {"triggers", "actions"} & set(old)
    assert all(t["platform"] == "mqtt" for t in old["trigger"]) and old["action"][0]["service"]
    for automation, triggers in ((new, new["triggers"]), (old, old["trigger"])):
        assert [t["topic"] for t in triggers] == ["earshot/+/event/siren", "earshot/+/event/gun_shot"]
        assert automation["alias"] == "earshot: siren or gunshot heard"


def _topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    regex = re.escape(pattern).replace(r"\+", "[^/]+").replace("/\\#", "(/.*)?")
    return re.fullmatch(regex, topic) is not None


def _node_red_flow() -> dict[str, dict]:
    blocks = [block for block in _fenced("json") if '"type": "mqtt in"' in block]
    assert len(blocks) == 1
    return {node["type"]: node for node in json.loads(blocks[0])}


def test_the_node_red_flow_reads_the_real_events() -> None:
    flow = _node_red_flow()
    start, end = contract_event(kind="start"), contract_event(kind="end")
    assert _topic_matches(flow["mqtt in"]["topic"], Topics("earshot", start["device_id"]).event("siren"))
    assert flow["mqtt in"]["datatype"] == "json" and flow["mqtt in"]["qos"] == "1"
    switch = flow["switch"]
    field = switch["property"].removeprefix("payload.")
    assert switch["propertyType"] == "msg" and field in start
    assert [rule["v"] for rule in switch["rules"]] == [start[field]] and end[field] != start[field]


def test_the_node_red_function_drops_repeats_of_real_events() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    function = _node_red_flow()["function"]["func"]
    first, second = contract_event(kind="start", n=1), contract_event(kind="start", n=2)
    # Node-RED's function node: ``msg`` in, the returned message (or null) out, ``context`` per node.
    script = (
        "const store = {}; const context = {get: k => store[k], set: (k, v) => { store[k] = v; }};\n"
        f"const run = new Function('msg', 'context', {json.dumps(function)});\n"
        f"const out = {json.dumps([first, first, second])}.map(p => run({{payload: p}}, context));\n"
        "console.log(JSON.stringify(out.map(m => m && m.topic)));"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(result.stdout) == ["test-device: siren", None, "test-device: siren"]
