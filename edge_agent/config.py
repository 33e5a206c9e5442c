"""The agent's one typed, immutable configuration: TOML, then environment, then CLI flags.

Loaded once at the entry point with ``load_config``. Every section is a frozen dataclass that checks
its own values, so a bad value fails with one line naming the key wherever the config is built.
Stdlib only: pydantic measured +16.5 MB RSS on the agent, too much of its 120 MB budget on a Pi.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.labels import DEFAULT_ALERT_LABELS
from edge_agent.strict import reject_unknown
from edge_agent.windowing import DEFAULT_HOP_SECONDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "EARSHOT_"
_MQTT_URL = re.compile(r"^(mqtts?)://([^:/\s]+)(?::(\d{1,5}))?/?$")
_TOPIC_UNSAFE = re.compile(r"[+#/\s]")
_USERINFO = re.compile(r"^([a-z]+://)[^/]*@")  # scheme://user:password@host


class ConfigError(ValueError):
    """A bad configuration value; the message is one line that names the key."""


class FrozenDict(dict):
    """A read-only dict: immutable like the rest of the tree, yet ``asdict``/copy/pickle/JSON friendly."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("configuration is read-only")

    __setitem__ = __delitem__ = __ior__ = _readonly  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return FrozenDict, (dict(self),)

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))


def _require(key: str, ok: bool, rule: str, value: Any) -> None:
    """Raise ConfigError('key: rule, got value') unless ok."""
    if not ok:
        shown = "<hidden>" if "password" in key or "token" in key else repr(value)
        if isinstance(value, float) and value.is_integer():
            shown = str(int(value))  # "got -1", as the user wrote it
        raise ConfigError(f"{key}: {rule}, got {shown}")


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _reject_userinfo(key: str, url: str, instead: str) -> None:
    """A URL with ``user:password@`` is refused, and shown without them: credentials come another way."""
    if _USERINFO.match(url):
        shown = _USERINFO.sub(r"\1<hidden>@", url)
        raise ConfigError(f"{key}: must not hold a user name or password (got {shown}); {instead}")


# Sample rates the agent reads (stdin, files): 768 kHz is the fastest audio interfaces; below 1 kHz is no
# sound the model hears, and a file claiming 1 Hz would be resampled 16000-fold into gigabytes.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000


@dataclass(frozen=True)
class AudioConfig:
    """Where audio comes from and how it is cut into windows."""

    source: str = "mic"  # "mic", "mic:NAME_OR_INDEX", a file path, or "-" for raw s16le stdin
    stdin_rate: int = 16000
    stdin_channels: int = 1
    block_size: int = 1024  # frames per capture callback / read
    ring_seconds: float = 10.0  # capacity of the buffer between capture and the consumer thread
    fast: bool = False  # files: as fast as possible instead of real-time pacing
    hop_seconds: float = DEFAULT_HOP_SECONDS

    def __post_init__(self) -> None:
        _require("audio.source", bool(self.source.strip()), "must not be empty", self.source)
        _require(
            "audio.stdin_rate",
            MIN_SAMPLE_RATE <= self.stdin_rate <= MAX_SAMPLE_RATE,
            f"must be in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}",
            self.stdin_rate,
        )
        _require(
            "audio.stdin_channels", 1 <= self.stdin_channels <= 64, "must be in 1..64", self.stdin_channels
        )
        _require(
            "audio.block_size", 1 <= self.block_size <= 1 << 20, "must be in 1..1048576", self.block_size
        )
        _require(
            "audio.ring_seconds",
            _finite(self.ring_seconds) and 0.5 <= self.ring_seconds <= 600,
            "must be in 0.5..600",
            self.ring_seconds,
        )
        _require(
            "audio.hop_seconds",
            _finite(self.hop_seconds) and 0.01 <= self.hop_seconds <= 60,
            "must be in 0.01..60",
            self.hop_seconds,
        )


@dataclass(frozen=True)
class ModelConfig:
    """Which ONNX model to run and how."""

    path: str | None = None  # None: the packaged edge_agent/models/default.onnx
    threads: int = 1  # onnxruntime intra-op threads; inter-op is always 1 (sequential graph)
    allow_ungated: bool = False
    reload_poll_s: float = 5.0  # how often the model file (and its card) is checked for a change; 0: never

    def __post_init__(self) -> None:
        _require("model.path", self.path is None or bool(self.path.strip()), "must not be empty", self.path)
        _require("model.threads", 1 <= self.threads <= 64, "must be in 1..64", self.threads)
        _require(
            "model.reload_poll_s",
            _finite(self.reload_poll_s) and 0 <= self.reload_poll_s <= 3600,
            "must be in 0..3600",
            self.reload_poll_s,
        )


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's listen list, thresholds and timing; thresholds missing here come from the model."""

    listen: tuple[str, ...] = DEFAULT_ALERT_LABELS
    thresholds: Mapping[str, float] = field(default_factory=FrozenDict)
    confirm_n: int = 2  # a class must pass its threshold in N of the last M windows
    confirm_m: int = 3
    # Temporal pooling: a class's score is the mean of its last K window scores before the threshold.
    # Four 1-s windows at the 0.256-s hop see 1.8 s: a two-tone siren's whole cycle, not one tone.
    pool_windows: int = 1
    cooldown_s: float = 10.0  # after an episode ends, no new start for this class for this long
    end_after_s: float = 2.0  # an episode ends once the class has not been heard for this long
    top_k: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "listen", tuple(self.listen))
        object.__setattr__(self, "thresholds", FrozenDict(self.thresholds))
        _require("detector.listen", len(self.listen) > 0, "must name at least one label", list(self.listen))
        for label in self.listen:
            _require(
                "detector.listen",
                isinstance(label, str) and bool(label.strip()),
                "labels must be non-empty strings",
                label,
            )
            problem = topic_level_problem(label)  # <prefix>/<device_id>/event/<label>
            _require("detector.listen", not problem, f"labels are MQTT topic levels and {problem}", label)
        for label, value in self.thresholds.items():
            _require(
                f"detector.thresholds.{label}",
                _finite(value) and 0.0 <= value <= 1.0,
                "must be in 0..1",
                value,
            )
        _require("detector.confirm_n", 1 <= self.confirm_n <= 1000, "must be in 1..1000", self.confirm_n)
        _require(
            "detector.confirm_m",
            self.confirm_n <= self.confirm_m <= 1000,
            f"must be in confirm_n ({self.confirm_n})..1000",
            self.confirm_m,
        )
        _require(
            "detector.cooldown_s",
            _finite(self.cooldown_s) and self.cooldown_s >= 0,
            "must be >= 0",
            self.cooldown_s,
        )
        _require(
            "detector.end_after_s",
            _finite(self.end_after_s) and self.end_after_s >= 0,
            "must be >= 0",
            self.end_after_s,
        )
        _require("detector.top_k", 1 <= self.top_k <= 100, "must be in 1..100", self.top_k)
        _require(
            "detector.pool_windows", 1 <= self.pool_windows <= 100, "must be in 1..100", self.pool_windows
        )


MQTT_STRING_MAX_BYTES = 65535  # the protocol's length prefix is two bytes
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# MQTT 3.1.1 §1.5.3: U+0000 is forbidden; C0/C1 controls and Unicode noncharacters "SHOULD NOT" appear,
# and mosquitto drops a connection whose client id or topic holds one (the agent then retried forever).
_MQTT_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _noncharacter(value: str) -> str | None:
    """The first Unicode noncharacter (U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF) in ``value``, if any."""
    return next((c for c in value if 0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE), None)


def mqtt_text_problem(value: str) -> str:
    """Why ``value`` cannot be an MQTT UTF-8 string (client id, topic), "" when it can."""
    if match := _MQTT_CONTROL.search(value):
        return f"must not contain control characters (U+{ord(match.group()):04X})"
    if _SURROGATE.search(value):
        return "must be valid Unicode (it holds a lone surrogate)"
    if (odd := _noncharacter(value)) is not None:
        return f"must not contain the Unicode noncharacter U+{ord(odd):04X} (MQTT forbids it)"
    if len(value.encode("utf-8")) > MQTT_STRING_MAX_BYTES:
        return f"must be at most {MQTT_STRING_MAX_BYTES} bytes of UTF-8"
    return ""


def topic_level_problem(value: str, first: bool = False) -> str:
    """Why ``value`` cannot be one level of the agent's topics ("" when it can); ``first``: it starts one."""
    if not value or _TOPIC_UNSAFE.search(value):
        return "must be non-empty without '/', '+', '#' or spaces"
    if first and value.startswith("$"):
        return "must not start with '$' (brokers keep $-topics to themselves: no subscriber gets an event)"
    return mqtt_text_problem(value)


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection and topics; ``url = "none"`` turns MQTT off (its offline queue: ``QueueConfig``)."""

    url: str = "none"  # "mqtt://host:port" or "mqtts://host:port"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # from EARSHOT_MQTT_PASSWORD or password_file
    password_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = field(default=None, repr=False)
    client_id: str | None = None
    topic_prefix: str = "earshot"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    qos: int = 1

    def __post_init__(self) -> None:
        _reject_userinfo(
            "mqtt.url",
            self.url,
            "set mqtt.username, and the password in EARSHOT_MQTT_PASSWORD or mqtt.password_file",
        )
        _require(
            "mqtt.url",
            self.url == "none" or _MQTT_URL.match(self.url) is not None,
            'must be "none" or mqtt://host[:port] or mqtts://host[:port]',
            self.url,
        )
        _require(
            "mqtt.url", self.port is None or 1 <= self.port <= 65535, "port must be in 1..65535", self.url
        )
        _require(
            "mqtt.tls_key",
            (self.tls_cert is None) == (self.tls_key is None),
            "tls_cert and tls_key must be set together",
            "<hidden>" if self.tls_key else None,
        )
        for key in ("topic_prefix", "discovery_prefix"):
            value = getattr(self, key)
            problem = topic_level_problem(value, first=True)
            _require(f"mqtt.{key}", not problem, problem, value)
        if self.client_id is not None:
            problem = mqtt_text_problem(self.client_id) or ("" if self.client_id else "must not be empty")
            _require("mqtt.client_id", not problem, problem, self.client_id)
        _require("mqtt.keepalive_s", 5 <= self.keepalive_s <= 3600, "must be in 5..3600", self.keepalive_s)
        _require(
            "mqtt.reconnect_min_s",
            _finite(self.reconnect_min_s) and self.reconnect_min_s > 0,
            "must be > 0",
            self.reconnect_min_s,
        )
        _require(
            "mqtt.reconnect_max_s",
            _finite(self.reconnect_max_s) and self.reconnect_max_s >= self.reconnect_min_s,
            f"must be >= reconnect_min_s ({self.reconnect_min_s})",
            self.reconnect_max_s,
        )
        _require("mqtt.qos", self.qos in (0, 1, 2), "must be 0, 1 or 2", self.qos)
        self._check_credentials()

    def _check_credentials(self) -> None:
        """MQTT caps both at 65535 bytes, and a broker drops a username with control characters."""
        if self.username is not None:
            _require(
                "mqtt.username",
                len(self.username.encode("utf-8")) <= MQTT_STRING_MAX_BYTES,
                f"must be at most {MQTT_STRING_MAX_BYTES} bytes",
                f"{len(self.username)} characters",
            )
            _require(
                "mqtt.username",
                not _CONTROL_CHARACTERS.search(self.username),
                "must not contain control characters (NUL, newline, ...)",
                "<hidden>",
            )
        if self.password is not None:
            _require(
                "mqtt.password",
                len(self.password.encode("utf-8")) <= MQTT_STRING_MAX_BYTES,
                f"must be at most {MQTT_STRING_MAX_BYTES} bytes",
                "<hidden>",
            )

    @property
    def enabled(self) -> bool:
        """False when ``url`` is "none"."""
        return self.url != "none"

    @property
    def tls(self) -> bool:
        """True for mqtts:// URLs."""
        return self.url.startswith("mqtts://")

    @property
    def host(self) -> str | None:
        """Broker host from the URL; None when MQTT is off."""
        match = _MQTT_URL.match(self.url)
        return match.group(2) if match else None

    @property
    def port(self) -> int | None:
        """Broker port from the URL (1883, or 8883 for mqtts, when not given); None when MQTT is off."""
        match = _MQTT_URL.match(self.url)
        if not match:
            return None
        return int(match.group(3)) if match.group(3) else (8883 if match.group(1) == "mqtts" else 1883)


@dataclass(frozen=True)
class QueueConfig:
    """The durable on-disk queue in front of every network output (MQTT, webhook): one file per output."""

    dir: str = "~/.local/state/earshot/queue"
    max_events: int = 10000  # per output; beyond it the oldest undelivered events are dropped and counted

    def __post_init__(self) -> None:
        _require("queue.dir", bool(self.dir.strip()), "must not be empty", self.dir)
        _require(
            "queue.max_events", 1 <= self.max_events <= 10_000_000, "must be in 1..10000000", self.max_events
        )


_HTTP_URL = re.compile(r"^https?://[^\s/:]+(:\d{1,5})?(/\S*)?$")


@dataclass(frozen=True)
class WebhookConfig:
    """An HTTP endpoint that receives each event as a JSON POST; ``url = "none"`` turns it off."""

    url: str = "none"  # http(s)://host[:port]/path
    token: str | None = field(default=None, repr=False)  # bearer token: EARSHOT_WEBHOOK_TOKEN or token_file
    token_file: str | None = None
    tls_ca: str | None = None  # CA bundle for https endpoints with a private CA
    timeout_s: float = 5.0
    retry_min_s: float = 1.0  # a failed POST is retried after this, doubling up to retry_max_s
    retry_max_s: float = 60.0

    def __post_init__(self) -> None:
        _reject_userinfo(
            "webhook.url",
            self.url,
            "the endpoint gets a bearer token from EARSHOT_WEBHOOK_TOKEN or webhook.token_file",
        )
        _require(
            "webhook.url",
            self.url == "none" or _HTTP_URL.match(self.url) is not None,
            'must be "none" or http(s)://host[:port][/path]',
            self.url,
        )
        if self.token is not None:
            _require(
                "webhook.token",
                not _CONTROL_CHARACTERS.search(self.token) and bool(self.token.strip()),
                "must be non-empty without control characters",
                "<hidden>",
            )
        _require(
            "webhook.timeout_s",
            _finite(self.timeout_s) and 0 < self.timeout_s <= 300,
            "must be in 0..300",
            self.timeout_s,
        )
        _require(
            "webhook.retry_min_s",
            _finite(self.retry_min_s) and self.retry_min_s > 0,
            "must be > 0",
            self.retry_min_s,
        )
        _require(
            "webhook.retry_max_s",
            _finite(self.retry_max_s) and self.retry_max_s >= self.retry_min_s,
            f"must be >= retry_min_s ({self.retry_min_s})",
            self.retry_max_s,
        )

    @property
    def enabled(self) -> bool:
        """False when ``url`` is "none"."""
        return self.url != "none"


@dataclass(frozen=True)
class StdoutConfig:
    """Events as JSON lines on standard output (turn off under systemd to keep the journal quiet)."""

    enabled: bool = True


_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


@dataclass(frozen=True)
class LevelsConfig:
    """Sound level metering beside the detections (edge_agent/levels.py), and the optional noise alert."""

    enabled: bool = True
    offset_db: float | None = None  # dB SPL = dBFS + offset: written by `earshot calibrate --spl 94`
    alert_laeq_db: float | None = None  # a "noise_level" episode while LAeq,1min exceeds this (None: off)
    alert_from: str = "22:00"  # local clock time the alert window opens (it may wrap past midnight)
    alert_to: str = "07:00"

    def __post_init__(self) -> None:
        if self.offset_db is not None:
            _require(
                "levels.offset_db",
                _finite(self.offset_db) and 0 <= self.offset_db <= 200,
                "must be in 0..200 (a MEMS mic's dBFS-to-SPL offset is about 90-130)",
                self.offset_db,
            )
        if self.alert_laeq_db is not None:
            in_range = _finite(self.alert_laeq_db) and -200 <= self.alert_laeq_db <= 200
            _require("levels.alert_laeq_db", in_range, "must be in -200..200", self.alert_laeq_db)
        for key in ("alert_from", "alert_to"):
            value = getattr(self, key)
            _require(f"levels.{key}", bool(_CLOCK_TIME.match(value)), 'must be a 24-hour "HH:MM"', value)


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus /metrics and /healthz HTTP server; ``port = None`` turns it off."""

    host: str = "127.0.0.1"
    port: int | None = None

    def __post_init__(self) -> None:
        _require("metrics.host", bool(self.host.strip()), "must not be empty", self.host)
        _require(
            "metrics.port", self.port is None or 0 <= self.port <= 65535, "must be in 0..65535", self.port
        )


@dataclass(frozen=True)
class CaptureConfig:
    """Local clip capture around alert starts (publishers/capture.py; audio never leaves the device)."""

    enabled: bool = False
    dir: str = "~/.local/state/earshot/captures"
    pre_roll_s: float = 2.0
    post_roll_s: float = 1.0  # after the detection; the file is written once this has been heard
    max_mb: float = 500.0
    max_age_days: float = 7.0

    def __post_init__(self) -> None:
        _require("capture.dir", bool(self.dir.strip()), "must not be empty", self.dir)
        _require(
            "capture.pre_roll_s",
            _finite(self.pre_roll_s) and 0 <= self.pre_roll_s <= 60,
            "must be in 0..60",
            self.pre_roll_s,
        )
        _require(
            "capture.post_roll_s",
            _finite(self.post_roll_s) and 0 <= self.post_roll_s <= 60,
            "must be in 0..60",
            self.post_roll_s,
        )
        _require("capture.max_mb", _finite(self.max_mb) and self.max_mb > 0, "must be > 0", self.max_mb)
        _require(
            "capture.max_age_days",
            _finite(self.max_age_days) and self.max_age_days > 0,
            "must be > 0",
            self.max_age_days,
        )


def default_device_id() -> str:
    """The host name, made safe for an MQTT topic level."""
    return _TOPIC_UNSAFE.sub("-", socket.gethostname()) or "earshot"


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent configuration tree."""

    device_id: str = field(default_factory=default_device_id)
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    stdout: StdoutConfig = field(default_factory=StdoutConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)

    def __post_init__(self) -> None:
        problem = topic_level_problem(self.device_id)  # a topic level, and inside the MQTT client id
        _require("device_id", not problem, problem, self.device_id)


SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(AgentConfig).items() if name != "device_id"
}
# (section, secret key, key of the file that holds it): never read from the config file in clear.
SECRETS = (("mqtt", "password", "password_file"), ("webhook", "token", "token_file"))
MOVED = {("mqtt", "queue_dir"): "queue.dir", ("mqtt", "queue_max_events"): "queue.max_events"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce_text(key: str, text: str, hint: Any) -> Any:
    """Parse an environment string into the field's type."""
    base = _strip_optional(hint)
    if base is not hint and text.strip().lower() in ("", "none", "null"):
        return None
    if base is bool:
        lowered = text.strip().lower()
        _require(key, lowered in _TRUE | _FALSE, "must be true or false", text)
        return lowered in _TRUE
    try:
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        kind = "an integer" if base is int else "a number"
        raise ConfigError(f"{key}: must be {kind}, got {text!r}") from None
    if typing.get_origin(base) is tuple:
        return [part.strip() for part in text.split(",") if part.strip()]
    if typing.get_origin(base) is Mapping:
        return _parse_pairs(key, text)
    return text


def _parse_pairs(key: str, text: str) -> dict[str, float]:
    """'siren=0.6,gun_shot=0.7' -> {'siren': 0.6, 'gun_shot': 0.7}."""
    pairs: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        label, sep, value = part.partition("=")
        try:
            pairs[label.strip()] = float(value) if sep else float("nan")
        except ValueError:
            raise ConfigError(f"{key}: expected label=number pairs, got {part!r}") from None
        _require(key, bool(sep) and bool(label.strip()), "expected label=number pairs", part)
    return pairs


def _strip_optional(hint: Any) -> Any:
    """X | None -> X; anything else unchanged."""
    args = typing.get_args(hint)
    if (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Check a TOML/CLI value against the field's type; ints are accepted where floats are expected."""
    base = _strip_optional(hint)
    if value is None:
        _require(key, base is not hint, "must be set", value)
        return None
    if base is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        _require(key, number, "must be a number", value)
        return float(value)
    if base is int:
        _require(key, isinstance(value, int) and not isinstance(value, bool), "must be an integer", value)
    elif base is bool or base is str:
        _require(key, isinstance(value, base), f"must be a {'boolean' if base is bool else 'string'}", value)
    elif typing.get_origin(base) is tuple:
        _require(
            key,
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
            "must be a list of strings",
            value,
        )
        return tuple(value)
    elif typing.get_origin(base) is Mapping:
        _require(key, isinstance(value, Mapping), "must be a table of label = number", value)
        for label, number in value.items():
            _check_type(f"{key}.{label}", number, float)
        return {label: float(number) for label, number in value.items()}
    return value


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    """Type-check ``values`` and construct one section (its __post_init__ checks ranges)."""
    hints = typing.get_type_hints(cls)
    reject_unknown(
        values,
        hints,
        lambda keys: f"{name}.{keys[0]}: unknown setting (known: {', '.join(sorted(hints))})",
        ConfigError,
    )
    kwargs = {key: _check_type(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:  # pragma: no cover - guarded by the unknown-key check above
        raise ConfigError(f"{name}: {error}") from None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML config file; a missing or malformed file is a one-line ConfigError."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"config file {str(path)!r}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r}: invalid TOML: {error}") from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError(f"config file {str(path)!r}: invalid TOML: values nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {str(path)!r}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    for section, key, file_key in SECRETS:
        table = data.get(section)
        if isinstance(table, Mapping) and key in table:
            raise ConfigError(
                f"{section}.{key}: secrets are not read from the config file; "
                f"set {ENV_PREFIX}{section.upper()}_{key.upper()} or {section}.{file_key}"
            )
    _reject_moved(data)
    return data


def _reject_moved(data: Mapping[str, Any]) -> None:
    """Settings that moved to another section: say where, rather than only 'unknown setting'."""
    for (section, key), target in MOVED.items():
        table = data.get(section)
        if isinstance(table, Mapping) and key in table:
            raise ConfigError(f"{section}.{key}: moved to {target} (the queue serves every network output)")


def env_layer(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Collect ``EARSHOT_<SECTION>_<KEY>`` (and ``EARSHOT_DEVICE_ID``) into a nested dict of parsed values."""
    layer: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if name == ENV_PREFIX + "DEVICE_ID":
            layer.setdefault("", {})["device_id"] = text
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if not name.startswith(ENV_PREFIX) or section not in SECTIONS:
            continue  # other EARSHOT_* variables belong to other tools
        hints = typing.get_type_hints(SECTIONS[section])
        _reject_moved({section: {key: text}})
        if key not in hints:
            raise ConfigError(f"{section}.{key}: unknown setting (from environment variable {name})")
        layer.setdefault(section, {})[key] = _coerce_text(f"{section}.{key}", text, hints[key])
    return layer


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win, key by key within each section."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if name in SECTIONS:
                _require(name, isinstance(value, Mapping), "must be a table", value)
                merged.setdefault(name, {}).update({k: v for k, v in value.items() if v is not None})
            elif name == "":  # env_layer's top-level keys
                merged.update(value)
            elif value is not None:
                merged[name] = value
    return merged


def _resolve_secrets(merged: dict[str, Any]) -> None:
    """Fill each secret from its file unless the environment already gave it."""
    for section, key, file_key in SECRETS:
        table = merged.get(section)
        if not isinstance(table, dict) or table.get(key) is not None or not table.get(file_key):
            continue
        path = Path(str(table[file_key])).expanduser()
        try:
            table[key] = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"{section}.{file_key}: cannot read {str(path)!r}: "
                f"{getattr(error, 'strerror', None) or error}"
            ) from None


def build_config(data: Mapping[str, Any]) -> AgentConfig:
    """Build and validate the tree from one merged nested dict (TOML shape)."""
    reject_unknown(
        data,
        [*SECTIONS, "device_id"],
        lambda keys: f"{keys[0]}: unknown setting (known sections: device_id, {', '.join(SECTIONS)})",
        ConfigError,
    )
    sections = {name: _build_section(name, cls, data.get(name, {})) for name, cls in SECTIONS.items()}
    if "device_id" in data:
        return AgentConfig(device_id=_check_type("device_id", data["device_id"], str), **sections)
    return AgentConfig(**sections)


def load_config(
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """TOML file (optional) -> environment -> CLI overrides (None values mean 'flag not given')."""
    toml = read_toml(path) if path is not None else {}
    env = env_layer(os.environ if environ is None else environ)
    merged = _merge(toml, env, dict(overrides or {}))
    _resolve_secrets(merged)
    return build_config(merged)
