"""earshot edge agent: live audio -> sliding windows -> ONNX classifier -> detector -> MQTT/stdout."""

__version__ = "0.1.0"
