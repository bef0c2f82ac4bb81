"""Loads the configured SavedModels and finds the servable a request names.

Follows TF Serving's model configuration: a `model_config_list` in text format,
or one model from --model_name/--model_base_path; numbered version folders
under each base path; the `latest` version policy unless `specific` or `all`
is given. Like TF Serving, the base paths are polled (`--file_system_poll_wait_seconds`): a new
version folder is loaded and served, then the versions the policy no longer wants are unloaded;
a version that fails to load leaves the serving ones in place and is retried when its files change.

Before a version loads, the TensorFlow that wrote it is read from its saved_model.pb: one written by a
newer TensorFlow than this server's is refused (see check_writer), as a load failure, instead of
loading half-way or failing on its first request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.tfserving.compat.errors import invalid, not_found
from services.tfserving.release import major_minor

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


SERVE_TAG = "serve"  # the tag TF Serving loads (its --saved_model_tags default)


class SavedModelTooNew(RuntimeError):
    """A SavedModel written by a newer TensorFlow than the one this server runs."""


def read_meta_graph(path: Path) -> Any:
    """The MetaGraphDef tagged "serve" of a SavedModel directory (the first one when none is)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    if not sm.meta_graphs:
        raise ValueError(f"{path / 'saved_model.pb'} holds no meta graph")
    return next((mg for mg in sm.meta_graphs if SERVE_TAG in mg.meta_info_def.tags), sm.meta_graphs[0])


def check_writer(name: str, version: int, meta_graph: Any, runtime: str | None = None, graph_def_version: int | None = None) -> None:
    """Refuse a version written by a newer TensorFlow than this server's runtime: such a SavedModel
    is not guaranteed to load (new ops, attributes, GraphDef versions), so it is refused up front with
    what to do, rather than loading half-way or failing on its first request. The writer's
    `meta_info_def.tensorflow_version` decides on major.minor; its GraphDef producer version, newer
    than the runtime's GRAPH_DEF_VERSION, also refuses (it covers writers that leave the version empty)."""
    import tensorflow as tf

    runtime = runtime or tf.__version__
    graph_def_version = tf.version.GRAPH_DEF_VERSION if graph_def_version is None else graph_def_version
    writer = meta_graph.meta_info_def.tensorflow_version
    series, own = major_minor(writer), major_minor(runtime)
    fix = f"re-export it with TensorFlow {own[0]}.{own[1]} (`twinserve export`)" if own else "re-export it with the server's TensorFlow (`twinserve export`)"
    if series and own and series > own:
        raise SavedModelTooNew(
            f"model '{name}' version {version} refused: written by TensorFlow {writer}, newer than this server's "
            f"TensorFlow {runtime} (a SavedModel from a newer TensorFlow is not guaranteed to load); {fix}"
        )
    producer = meta_graph.graph_def.versions.producer
    if producer > graph_def_version:
        raise SavedModelTooNew(
            f"model '{name}' version {version} refused: its GraphDef version {producer} (written by TensorFlow "
            f"{writer or 'unknown'}) is newer than this server's TensorFlow {runtime} (GraphDef version {graph_def_version}); {fix}"
        )


def _wrap(fn: Any, outputs: list[str]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    import tensorflow as tf

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: result[k].numpy() for k in outputs}

    return call


def load_servable(name: str, version: int, path: Path) -> Servable:
    import tensorflow as tf

    meta_graph = read_meta_graph(path)
    check_writer(name, version, meta_graph)
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
    servable = Servable(name, version, path, signatures, meta_graph.signature_def)
    servable._keepalive = loaded  # type: ignore[attr-defined]
    return servable


@dataclass
class VersionEvent:
    """What one poll did to one version: loaded, unloaded, or failed (with the reason)."""

    name: str
    version: int
    action: str
    detail: str = ""


def _reason(exc: BaseException) -> str:
    """A failed load as one line: the exception's first line, capped."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if len(text) <= 500 else text[:497] + "..."


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

    def load_all(self, load: Callable[[str, int, Path], Servable] | None = None) -> None:
        """The start-up load. Like TF Serving, every configured version is tried, and the server does
        not start when one fails: it exits with one line per version that did not load and why."""
        load = load or load_servable
        for cfg in self.configs.values():
            versions = select_versions(cfg)
            if not versions:
                raise SystemExit(f"no servable versions found for model {cfg.name!r} under {cfg.base_path}")
            for v in versions:
                path = Path(cfg.base_path) / str(v)
                try:
                    self.servables[cfg.name][v] = load(cfg.name, v, path)
                except Exception as exc:  # noqa: BLE001  (reported below, with every other failure)
                    self.failed[(cfg.name, v)] = (_files_signature(path), _reason(exc))
        if self.failed:
            lines = [f"{{name: {n} version: {v}}} due to error: {error}" for (n, v), (_, error) in sorted(self.failed.items())]
            raise SystemExit(
                f"Failed to start server. Error: UNKNOWN: {len(lines)} servable(s) did not become available:\n  " + "\n  ".join(lines)
            )

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
                    reason = _reason(exc)
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
