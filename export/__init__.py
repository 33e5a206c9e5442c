"""earshot export: checkpoint -> ONNX (FP32, INT8) with parity checks and a model card."""
