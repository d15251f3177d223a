"""Exporting the per-tile network: ONNX and TorchScript."""
