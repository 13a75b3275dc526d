"""Schedules, samplers, prediction-type conversion, guidance and step skipping: NumPy only, no ONNX."""
