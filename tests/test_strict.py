"""Every reader that refuses unknown keys does it through edge_agent.strict, each in its own words."""

from __future__ import annotations

import pytest

from deploy.gate.policy import POLICY_KEYS, parse_policy
from edge_agent.config import ConfigError, build_config
from edge_agent.frontend import FrontendParams
from edge_agent.strict import reject_unknown

EVERY_THRESHOLD = "[thresholds]\n" + "".join(f"{key} = 0\n" for key in POLICY_KEYS)


def test_known_keys_pass_and_the_first_unknown_one_is_named() -> None:
    reject_unknown({"a": 1}, ("a", "b"), lambda keys: "never")
    with pytest.raises(KeyError, match="c, d"):
        reject_unknown(["d", "a", "c"], ("a",), lambda keys: ", ".join(keys), KeyError)


def test_agent_config_and_front_end_keep_their_messages() -> None:
    with pytest.raises(ConfigError, match=r"^audio\.hopp: unknown setting \(known: "):
        build_config({"audio": {"hopp": 1}})
    with pytest.raises(ConfigError, match=r"^tuning: unknown setting \(known sections: device_id, "):
        build_config({"tuning": {}})
    with pytest.raises(ValueError, match=r"^unknown front-end parameters: \['n_melz'\]$"):
        FrontendParams.from_dict({"n_melz": 64})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[tresholds]\n",
            r"^unknown policy key: 'tresholds' \(allowed: \[thresholds\] and \[attack\] tables\)$",
        ),
        (EVERY_THRESHOLD + "[attack]\nsteps = 3\n", r"^unknown policy key: attack\.steps$"),
        ("[thresholds]\nmin_speed = 3\n", r"^unknown policy key: thresholds\.min_speed$"),
    ],
)
def test_gate_policy_keeps_its_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policy(text)


def test_model_config_keeps_its_message() -> None:
    pytest.importorskip("torch")
    from training.models import ModelConfig

    with pytest.raises(ValueError, match=r"^unknown model config keys: \['channels'\]$"):
        ModelConfig.from_dict({"arch": "cnn", "channels": [4]})
