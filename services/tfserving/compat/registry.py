"""Loads the configured SavedModels and finds the servable a request names.

Follows TF Serving's model configuration: a `model_config_list` in text format,
or one model from --model_name/--model_base_path; numbered version folders
under each base path; the `latest` version policy unless `specific` or `all`
is given. Like TF Serving, the base paths are polled (`--file_system_poll_wait_seconds`): a new
version folder is loaded and served, then the versions the policy no longer wants are unloaded;
a version that fails to load leaves the serving ones in place and is retried when its files change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.tfserving.compat.errors import invalid, not_found

DEFAULT_SIGNATURE = "serving_default"


@dataclass
class TensorInfo:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None for unknown dimensions, the batch one included


@dataclass
class Signature:
    name: str
    inputs: dict[str, TensorInfo]
    outputs: list[str]
    call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    batchable: bool  # every input has an unknown leading (batch) dimension


@dataclass
class Servable:
    name: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    signature_defs: Any  # the SavedModel's SignatureDef map (protobuf), for metadata
    state: str = "AVAILABLE"
    batchers: dict[str, Any] = field(default_factory=dict)

    def signature(self, name: str | None) -> Signature:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise invalid(f'Serving signature name: "{key}" not found in signature def') from None


@dataclass
class ModelConfig:
    name: str
    base_path: str
    policy: str = "latest"  # latest | all | specific
    versions: tuple[int, ...] = ()
    num_latest: int = 1
    labels: dict[str, int] = field(default_factory=dict)


def read_model_configs(config_file: str, model_name: str, model_base_path: str) -> list[ModelConfig]:
    if not config_file:
        if not model_base_path:
            raise SystemExit("either --model_config_file or --model_base_path is required")
        return [ModelConfig(model_name, model_base_path)]
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    cfg = text_format.Parse(Path(config_file).read_text(), model_server_config_pb2.ModelServerConfig())
    out = []
    for c in cfg.model_config_list.config:
        policy = c.model_version_policy.WhichOneof("policy_choice") or "latest"
        out.append(
            ModelConfig(
                name=c.name,
                base_path=c.base_path,
                policy=policy,
                versions=tuple(c.model_version_policy.specific.versions),
                num_latest=c.model_version_policy.latest.num_versions or 1,
                labels=dict(c.version_labels),
            )
        )
    return out


def available_versions(base_path: str) -> list[int]:
    try:
        return sorted(int(d) for d in os.listdir(base_path) if d.isdigit() and os.path.isdir(os.path.join(base_path, d)))
    except FileNotFoundError:
        return []


def select_versions(cfg: ModelConfig) -> list[int]:
    found = available_versions(cfg.base_path)
    if cfg.policy == "all":
        return found
    if cfg.policy == "specific":
        return [v for v in found if v in cfg.versions]
    return found[-cfg.num_latest :]


def _load_signature_defs(path: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    return sm.meta_graphs[0].signature_def


def _wrap(fn: Any, outputs: list[str]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    import tensorflow as tf

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: result[k].numpy() for k in outputs}

    return call


def load_servable(name: str, version: int, path: Path) -> Servable:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signatures: dict[str, Signature] = {}
    for sig_name, fn in loaded.signatures.items():
        spec = fn.structured_input_signature[1]
        inputs = {
            key: TensorInfo(key, np.dtype(ts.dtype.as_numpy_dtype), tuple(ts.shape.as_list()) if ts.shape.rank is not None else ())
            for key, ts in spec.items()
        }
        outputs = sorted(fn.structured_outputs)
        batchable = bool(inputs) and all(len(t.shape) >= 1 and t.shape[0] is None for t in inputs.values())
        signatures[sig_name] = Signature(sig_name, inputs, outputs, _wrap(fn, outputs), batchable)
        # warm up: trace and allocate once, so the first client does not pay for it. Only with numeric
        # inputs (no string can be invented that every model accepts, an image decoder refuses b"") and
        # best effort: a model that refuses zeros still loads, as it would in TF Serving
        if batchable and all(t.dtype.kind != "O" for t in inputs.values()):
            try:
                signatures[sig_name].call({k: np.zeros((1, *t.shape[1:]), t.dtype) for k, t in inputs.items()})
            except Exception:  # noqa: BLE001  (the first request reports what is wrong with it)
                pass
    servable = Servable(name, version, path, signatures, _load_signature_defs(path))
    servable._keepalive = loaded  # type: ignore[attr-defined]
    return servable


@dataclass
class VersionEvent:
    """What one poll did to one version: loaded, unloaded, or failed (with the reason)."""

    name: str
    version: int
    action: str
    detail: str = ""


def _files_signature(path: Path) -> tuple:
    try:
        st = (path / "saved_model.pb").stat()
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return ()


class Registry:
    def __init__(self, configs: list[ModelConfig]) -> None:
        self.configs = {c.name: c for c in configs}
        # readers take a model's dict once per request; a poll swaps in a new dict, never edits one
        self.servables: dict[str, dict[int, Servable]] = {c.name: {} for c in configs}
        self.failed: dict[tuple[str, int], tuple[tuple, str]] = {}  # (name, version) -> (files signature, error)

    def load_all(self) -> None:
        for cfg in self.configs.values():
            versions = select_versions(cfg)
            if not versions:
                raise SystemExit(f"no servable versions found for model {cfg.name!r} under {cfg.base_path}")
            for v in versions:
                self.servables[cfg.name][v] = load_servable(cfg.name, v, Path(cfg.base_path) / str(v))

    def reconcile(self, load: Callable[[str, int, Path], Servable] | None = None) -> tuple[list[VersionEvent], list[Servable]]:
        """One poll: load the versions the policy now wants, then retire those it no longer wants.
        Returns what happened and the servables taken out of service (their batchers to retire)."""
        load = load or load_servable
        events: list[VersionEvent] = []
        retired: list[Servable] = []
        for cfg in self.configs.values():
            current = self.servables[cfg.name]
            wanted = select_versions(cfg)
            loaded: dict[int, Servable] = {}
            for v in wanted:
                if v in current:
                    continue
                path = Path(cfg.base_path) / str(v)
                signature = _files_signature(path)
                failure = self.failed.get((cfg.name, v))
                if failure is not None and failure[0] == signature:
                    continue  # failed before and unchanged since: wait for new files
                try:
                    loaded[v] = load(cfg.name, v, path)
                except Exception as exc:  # a half-copied or broken version must not stop the server
                    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                    self.failed[(cfg.name, v)] = (signature, reason)
                    events.append(VersionEvent(cfg.name, v, "failed", reason))
                    continue
                self.failed.pop((cfg.name, v), None)
                events.append(VersionEvent(cfg.name, v, "loaded"))
            serving = {**current, **loaded}
            keep = {v: s for v, s in serving.items() if v in wanted}
            if not keep:
                keep = current  # nothing wanted could be loaded: go on serving what serves now
            for v, servable in serving.items():
                if v not in keep:
                    retired.append(servable)
                    events.append(VersionEvent(cfg.name, v, "unloaded"))
            if keep.keys() != current.keys():
                self.servables[cfg.name] = keep
        return events, retired

    def find(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        versions = self.servables.get(name)
        if not versions:
            raise not_found(f"Servable not found for request: Latest({name})")
        if label is not None:
            labelled = self.configs[name].labels.get(label)
            if labelled is None:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = labelled
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            raise not_found(f"Servable not found for request: Specific({name}, {version})") from None

    def versions(self, name: str, version: int | None = None) -> list[Servable]:
        if name not in self.servables:
            raise not_found(f"Could not find any versions of model {name}")
        found = self.servables[name]
        if version is not None:
            if version not in found:
                raise not_found(f"Could not find version {version} of model {name}")
            return [found[version]]
        return [found[v] for v in sorted(found)]
