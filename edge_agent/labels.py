"""The UrbanSound8K label set, in classID order: the one definition shared by training, export and agent."""

URBANSOUND8K_LABELS: tuple[str, ...] = (
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
)

# Classes a street sensor alerts on unless the operator's listen list says otherwise.
DEFAULT_ALERT_LABELS: tuple[str, ...] = ("siren", "gun_shot")
