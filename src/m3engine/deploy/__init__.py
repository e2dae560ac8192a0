"""Deployment artifacts: ONNX export, optimization, int8 / fp16, TensorRT settings, validation."""
