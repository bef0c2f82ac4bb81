"""Copy TF Serving's three configs from services/tfserving/ into the kustomizations that need them.

kustomize refuses files outside a kustomization's root (its load restrictor), so the configMapGenerator
of deploy/k8s/base cannot read services/tfserving/*.config where compose mounts them from. This script
keeps one source: services/tfserving/ is edited, the copies are written from it.

    python deploy/k8s/sync_tfserving_config.py           # write the copies
    python deploy/k8s/sync_tfserving_config.py --check   # exit 1 when a copy differs (tests/test_k8s_manifests.py checks the same)

- deploy/k8s/base/tfserving/{models,batching,monitoring}.config: byte-for-byte copies (the same
  /artifacts layout as compose: the export init container fills /artifacts).
- deploy/k8s/overlays/kserve/tfserving/models.config: models.config with each base_path moved from
  /artifacts/tfserving/ to /mnt/models/, where KServe mounts storageUri pvc://twinserve-models/tfserving.

Standard library only: it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "services" / "tfserving"
FILES = ("models.config", "batching.config", "monitoring.config")
BASE = ROOT / "deploy" / "k8s" / "base" / "tfserving"
KSERVE = ROOT / "deploy" / "k8s" / "overlays" / "kserve" / "tfserving"
COMPOSE_MODELS = "/artifacts/tfserving/"
KSERVE_MODELS = "/mnt/models/"
KSERVE_HEADER = (
    "# Written by deploy/k8s/sync_tfserving_config.py from services/tfserving/models.config: do not edit.\n"
    f"# KServe mounts storageUri pvc://twinserve-models/tfserving at {KSERVE_MODELS}, so base_path points there.\n"
)


def kserve_models_config(source: str) -> str:
    """services/tfserving/models.config for KServe: every base_path under /mnt/models instead of /artifacts/tfserving."""
    if f'base_path: "{COMPOSE_MODELS}' not in source:
        raise ValueError(f"no base_path under {COMPOSE_MODELS} in services/tfserving/models.config: update this script")
    return KSERVE_HEADER + source.replace(f'base_path: "{COMPOSE_MODELS}', f'base_path: "{KSERVE_MODELS}')


def expected() -> dict[Path, str]:
    """Every copy and the text it must hold."""
    out = {BASE / name: (SOURCE / name).read_text() for name in FILES}
    out[KSERVE / "models.config"] = kserve_models_config((SOURCE / "models.config").read_text())
    return out


def stale() -> list[Path]:
    return [path for path, text in expected().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only report copies that differ from services/tfserving/")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        for path in differ:
            print(f"{path.relative_to(ROOT)} differs from services/tfserving/: run python deploy/k8s/sync_tfserving_config.py", file=sys.stderr)
        return 1 if differ else 0
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
