"""The third stack: ONNX Runtime behind KServe's Python model server (see server.py)."""
