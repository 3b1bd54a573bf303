"""Serving a trained model without this project: ONNX/TorchScript files, their parity check, int8 copies,
and running them (``deploy.runtime`` imports neither torch nor Lightning for ONNX)."""
