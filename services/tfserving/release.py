"""The TensorFlow Serving release twinserve targets: the one place every TensorFlow version follows.

A SavedModel written by a newer TensorFlow than the server's runtime is not guaranteed to load
(new ops, attributes or GraphDef versions the older runtime does not know). So the TensorFlow that
writes the SavedModels (`twinserve export`), the compatible server's TensorFlow, tensorflow-serving-api
and the official image that docker-compose starts by default all follow this release:

- docker-compose.yml: `${TFSERVING_IMAGE:-tensorflow/serving:<TF_SERVING_RELEASE>}` (the same tag);
- pyproject.toml, services/tfserving/requirements.txt and the export stage of
  services/torchserve/Dockerfile: `tensorflow==` and `tensorflow-serving-api==` this version.

Compose files, requirements and Dockerfiles cannot read a Python constant, so they repeat the number
and tests/test_tf_release.py fails when any of them, or the installed packages, drift from it. To move:
change TF_SERVING_RELEASE and every pin above together, reinstall (`make setup`), re-export
(`twinserve export --force`) and run tests/test_tf_release.py.

TF Serving releases are built on the TensorFlow release of the same number, and tensorflow-serving-api
is published with the same number; a tensorflow-serving-api without a matching server release (2.21.0
on PyPI, while tensorflow/serving ends at 2.20.0) is no target.
"""

from __future__ import annotations

import re

TF_SERVING_RELEASE = "2.20.0"


def major_minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a TensorFlow version string ("2.20.0", "2.21.0-rc1", "2.20.0-dev2026…");
    None when it is empty or not one."""
    m = re.match(r"\s*v?(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None
