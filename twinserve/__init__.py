"""twinserve: one model served by TorchServe and TensorFlow Serving, behind one gateway, measured side by side."""

from models import __version__

__all__ = ["__version__"]
