"""twinserve: one model served by TorchServe and TensorFlow Serving, behind one gateway, measured side by side."""

__version__ = "0.1.0"
