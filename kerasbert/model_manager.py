"""Served models: their loaded versions, and the poll that keeps them current.

`ModelManager` keeps each model's versions in line with its base path, as
TF Serving's server core does: `VersionPolicy` picks the versions to serve
among the integer-named directories, `load_servable` loads one with plain
TensorFlow (and `tensorflow_text` for the tokenizer's ops in kerasbert's
exports) and warms it up, and `call_signature` runs a signature on numpy
inputs, with TensorFlow's errors turned into `RestError`s.
`read_model_config_file` reads a `--model_config_file`.

Example:

>>> manager = ModelManager([ModelConfig("quickstart", Path("saved_models/quickstart"))])
>>> manager.poll()
>>> manager.servable("quickstart").version
1

Reference: TF Serving's `server_core.cc`, `file_system_storage_path_source.cc`
and `saved_model_warmup.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.config import model_server_config_pb2

from kerasbert.rest_json import RestError, _invalid, _not_found
from kerasbert.saved_model_bundle import WARMUP_FILE, SavedModelBundle, error_message, warmup_requests

__all__ = [
    "ModelConfig",
    "ModelManager",
    "Servable",
    "VersionPolicy",
    "VersionState",
    "call_signature",
    "list_versions",
    "load_servable",
    "read_model_config_file",
]

# The server's one logger, whichever of its modules writes.
log = logging.getLogger("kerasbert.serve")



# === Servables ===


@dataclasses.dataclass(eq=False)
class Servable:
    """One loaded version of a model.

    A request keeps a reference to its `Servable` for its whole life, so a
    version unloaded meanwhile stays usable until the request is answered.

    Attributes:
        name: the model's name.
        version: the version number (the directory's name).
        path: the version directory.
        bundle: the loaded model: a `SavedModelBundle`, or any object with
            its `signature_defs` and `run(key, inputs)`.
    """

    name: str
    version: int
    path: Path
    bundle: object

    @property
    def id(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"

    @property
    def signature_defs(self) -> dict:
        """`{key: SignatureDef}` of the MetaGraphDef tagged `serve`."""
        return self.bundle.signature_defs


def load_servable(name: str, version: int, path) -> Servable:
    """Loads a SavedModel version directory as TF Serving does, then warms it up.

    The model is a `SavedModelBundle`: a TF1 Session on the MetaGraph, its
    variables restored and its init op run. Warm-up replays
    `assets.extra/tf_serving_warmup_requests` when the export has one (as TF
    Serving does, and a failing record fails the load); otherwise it calls
    each signature once on placeholder inputs, so that the first real
    request doesn't pay for TensorFlow's graph set-up.

    Args:
        name: the model's name.
        version: its version number.
        path: the version directory.

    Returns:
        The loaded `Servable`.

    Raises:
        RestError: TensorFlow failed to restore the model or to run a
            warm-up record; its status code and message.
        OSError: no SavedModel there.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise FileNotFoundError(f"No saved_model.pb or saved_model.pbtxt in {path}")
    try:
        bundle = SavedModelBundle(path)
    except tf.errors.OpError as error:
        raise RestError(error_message(error), _TF_ERROR_CODES.get(error.error_code, "UNKNOWN")) from None
    servable = Servable(name=name, version=int(version), path=path, bundle=bundle)
    try:
        _warm_up(servable)
    except BaseException:
        bundle.close()
        raise
    return servable


def _warm_up(servable: Servable):
    if not (servable.path / "assets.extra" / WARMUP_FILE).is_file():
        for key in servable.signature_defs:
            with contextlib.suppress(Exception):
                call_signature(servable, key, _placeholder_inputs(servable.signature_defs[key]))
        return
    count = 0
    # A failing record fails the load with that request's own status, as
    # in TF Serving.
    try:
        for request in warmup_requests(servable.path):
            if request.kind not in ("predict_log", "classify_log", "regress_log"):
                log.warning("Skipping a warm-up record of kind %s for %s", request.kind, servable.id)
                continue
            call_signature(servable, request.signature_key, request.inputs)
            count += 1
    except ValueError as error:
        raise RestError(str(error), "INVALID_ARGUMENT") from None
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
        servable.path / "assets.extra" / WARMUP_FILE,
        count,
    )


def _placeholder_inputs(signature) -> dict:
    inputs = {}
    for name, info in signature.inputs.items():
        shape = [1] if info.tensor_shape.unknown_rank else [max(d.size, 1) for d in info.tensor_shape.dim]
        if info.dtype == types_pb2.DT_STRING:
            inputs[name] = np.full(shape, b"", dtype=object)
        else:
            inputs[name] = np.zeros(shape, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    return inputs


def call_signature(servable: Servable, key: str, inputs: Mapping[str, np.ndarray]) -> dict:
    """Runs one signature on numpy inputs; TensorFlow's errors become `RestError`s."""
    signature = servable.signature_defs.get(key)
    if signature is None:
        raise _invalid(f'Serving signature key "{key}" not found.')
    try:
        # Converted as TF Serving converts a request's values: to the
        # signature's dtype, refusing what doesn't fit it.
        arrays = {
            name: tf.constant(value, dtype=tf.dtypes.as_dtype(signature.inputs[name].dtype)).numpy()
            for name, value in inputs.items()
        }
        return servable.bundle.run(key, arrays)
    except tf.errors.OpError as error:
        code = _TF_ERROR_CODES.get(error.error_code, "UNKNOWN")
        raise RestError(error_message(error), code) from None
    except (KeyError, TypeError, ValueError) as error:
        raise _invalid(
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        ) from None


_TF_ERROR_CODES = {
    tf.errors.CANCELLED: "CANCELLED",
    tf.errors.UNKNOWN: "UNKNOWN",
    tf.errors.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    tf.errors.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    tf.errors.NOT_FOUND: "NOT_FOUND",
    tf.errors.ALREADY_EXISTS: "ALREADY_EXISTS",
    tf.errors.PERMISSION_DENIED: "PERMISSION_DENIED",
    tf.errors.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    tf.errors.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    tf.errors.ABORTED: "ABORTED",
    tf.errors.OUT_OF_RANGE: "OUT_OF_RANGE",
    tf.errors.UNIMPLEMENTED: "UNIMPLEMENTED",
    tf.errors.INTERNAL: "INTERNAL",
    tf.errors.UNAVAILABLE: "UNAVAILABLE",
    tf.errors.DATA_LOSS: "DATA_LOSS",
    tf.errors.UNAUTHENTICATED: "UNAUTHENTICATED",
}


# === Models, versions and the file-system poll ===


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: TF Serving's `model_version_policy`.

    Attributes:
        kind: `latest` (the `num_versions` highest), `all`, or `specific`
            (those in `versions` that exist).
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(
                "Invalid value for argument `kind`. Expected one of latest, all, specific. "
                f"Received: kind={self.kind!r}"
            )
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(
                "Invalid value for argument `num_versions`. Expected an integer >= 1. "
                f"Received: num_versions={self.num_versions}"
            )
        if self.kind == "specific" and not self.versions:
            raise ValueError("A `specific` version policy needs at least one version in `versions`.")

    def select(self, available) -> list[int]:
        """The versions to serve among `available`, highest first."""
        available = sorted(set(available), reverse=True)
        if self.kind == "latest":
            return available[: self.num_versions]
        if self.kind == "all":
            return available
        return [v for v in available if v in self.versions]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model: TF Serving's `ModelConfig`.

    Attributes:
        name: the name in request URLs, `/v1/models/<name>`.
        base_path: the directory holding one integer-named directory per version.
        version_policy: which versions to serve.
        version_labels: `{label: version}`, for `/v1/models/<name>/labels/<label>`.
    """

    name: str
    base_path: Path
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


def read_model_config_file(path) -> list[ModelConfig]:
    """The models of a `--model_config_file`: a `ModelServerConfig` in text format.

    Example file:

    ```
    model_config_list {
      config {
        name: "quickstart"
        base_path: "saved_models/quickstart"
        model_platform: "tensorflow"
        model_version_policy { all {} }
        version_labels { key: "stable" value: 1 }
      }
    }
    ```

    Relative base paths are relative to the directory you run from.

    Raises:
        ValueError: the file is not a valid config; the message names the file.
        OSError: the file can't be read.
    """
    path = Path(path)
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except text_format.ParseError as error:
        raise ValueError(f"{path}: {error}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(
            f"{path}: expected a `model_config_list {{ config {{ ... }} }}`; custom_model_config is not supported"
        )
    configs = []
    for index, entry in enumerate(config.model_config_list.config):
        where = f"{path}: model_config_list.config[{index}]"
        if not entry.name:
            raise ValueError(f"{where}: `name` is missing")
        if not entry.base_path:
            raise ValueError(f"{where} ({entry.name}): `base_path` is missing")
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"{where} ({entry.name}): model_platform {entry.model_platform!r} is not supported; "
                "this server serves TensorFlow SavedModels (`tensorflow`)"
            )
        if any(c.name == entry.name for c in configs):
            raise ValueError(f"{where}: model name {entry.name!r} appears more than once")
        choice = entry.model_version_policy.WhichOneof("policy_choice")
        try:
            if choice == "all":
                policy = VersionPolicy("all")
            elif choice == "specific":
                policy = VersionPolicy(
                    "specific", versions=tuple(entry.model_version_policy.specific.versions)
                )
            else:
                policy = VersionPolicy(
                    "latest", num_versions=entry.model_version_policy.latest.num_versions or 1
                )
        except ValueError as error:
            raise ValueError(f"{where} ({entry.name}): model_version_policy: {error}") from None
        configs.append(
            ModelConfig(
                name=entry.name,
                base_path=Path(entry.base_path).expanduser().absolute(),
                version_policy=policy,
                version_labels=dict(entry.version_labels),
            )
        )
    if not configs:
        raise ValueError(f"{path}: model_config_list has no `config`")
    return configs


_VERSION_NAME = re.compile(r"[0-9]+")


def list_versions(base_path) -> dict[int, Path]:
    """`{version: directory}` for the integer-named directories under `base_path`.

    Hidden and non-integer directories (an exporter's `.tmp-*` staging
    directories among them) are not versions.
    """
    versions = {}
    try:
        entries = sorted(os.scandir(base_path), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return versions
    for entry in entries:
        if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir():
            versions.setdefault(int(entry.name), Path(entry.path))
    return versions


def _fingerprint(path: Path) -> tuple:
    """Changes when a version directory's files do, to retry a failed load."""
    parts = []
    for relative in (".", "saved_model.pb", "variables/variables.index", "variables"):
        with contextlib.suppress(OSError):
            stat = (path / relative).stat()
            parts.append((relative, stat.st_mtime_ns, stat.st_size))
    return tuple(parts)


@dataclasses.dataclass(frozen=True)
class VersionState:
    """A version's state, as TF Serving's `ModelVersionStatus` reports it."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING or END
    error_code: str = "OK"
    error_message: str = ""


class ModelManager:
    """Loads the versions each model's policy asks for, and keeps them current.

    `poll()` looks at every base path once: it loads versions that appeared
    (newest first) and unloads those no longer wanted, but never unloads a
    model's last serving version before a wanted one is available, so
    requests never go unanswered during a change. `start()` polls every
    `poll_wait_seconds` in a background thread.

    Args:
        configs: the models to serve.
        poll_wait_seconds: seconds between polls; 0 polls only when
            `poll()` is called.
        max_load_attempts: tries for a version that fails to load (it may
            still be being copied); it is tried again when its files change.
        load: `load(name, version, path) -> Servable`; `load_servable` by
            default.

    Example:

    >>> manager = ModelManager([ModelConfig("quickstart", Path("saved_models/quickstart"))])
    >>> manager.poll()
    >>> manager.servable("quickstart").version
    1
    """

    def __init__(self, configs, poll_wait_seconds=1.0, max_load_attempts=5, load=load_servable):
        configs = list(configs)
        if not configs:
            raise ValueError(
                "Invalid value for argument `configs`. Expected at least one ModelConfig. Received: []"
            )
        if poll_wait_seconds < 0:
            raise ValueError(
                "Invalid value for argument `poll_wait_seconds`. Expected a number >= 0. "
                f"Received: poll_wait_seconds={poll_wait_seconds}"
            )
        self.configs = {config.name: config for config in configs}
        self.poll_wait_seconds = poll_wait_seconds
        self.max_load_attempts = max_load_attempts
        self._load = load
        # {name: {version: Servable}}, replaced whole under the lock, read without it.
        self._servables: dict[str, dict[int, Servable]] = {name: {} for name in self.configs}
        self._states: dict[str, dict[int, VersionState]] = {name: {} for name in self.configs}
        self._failures: dict[tuple[str, int], tuple[int, tuple]] = {}
        self._missing_reported: set[str] = set()
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    @property
    def model_names(self) -> list[str]:
        return list(self.configs)

    # --- Lookups, from request handlers ---

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request asks for: the highest loaded version by default.

        Raises:
            RestError: NOT_FOUND for an unknown model or a version not loaded,
                INVALID_ARGUMENT for an unknown label; TF Serving's messages.
        """
        if label is not None:
            version = self._version_for_label(name, label)
        versions = self._servables.get(name) or {}
        if version is None:
            if not versions:
                raise _not_found(f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        servable = versions.get(version)
        if servable is None:
            raise _not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def _version_for_label(self, name, label) -> int:
        config = self.configs.get(name)
        if config is None or label not in config.version_labels:
            raise _invalid(f"Unrecognized servable version label: {label}")
        return config.version_labels[label]

    def version_states(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionState]:
        """The states of a model's versions, highest first (GetModelStatus).

        Raises:
            RestError: NOT_FOUND when the model or version has no state yet.
        """
        if label is not None:
            version = self._version_for_label(name, label)
        states = self._states.get(name) or {}
        if version is not None:
            if version not in states:
                raise _not_found(f"Could not find version {version} of model {name}")
            return [states[version]]
        if not states:
            raise _not_found(f"Could not find any versions of model {name}")
        return [states[v] for v in sorted(states, reverse=True)]

    # --- The poll ---

    def poll(self):
        """Brings every model's loaded versions in line with its base path, once."""
        with self._poll_lock:
            for config in self.configs.values():
                try:
                    self._reconcile(config)
                except Exception:  # noqa: BLE001  (one model's trouble must not stop the others)
                    log.exception("Polling the base path of model %s failed", config.name)

    def _reconcile(self, config: ModelConfig):
        on_disk = list_versions(config.base_path)
        if not on_disk and config.name not in self._missing_reported:
            log.warning("No versions of servable %s found under base path %s", config.name, config.base_path)
            self._missing_reported.add(config.name)
        elif on_disk:
            self._missing_reported.discard(config.name)
        wanted = config.version_policy.select(on_disk)
        loaded = self._servables[config.name]
        for version in wanted:
            if version not in loaded and self._should_try(config.name, version, on_disk[version]):
                self._load_version(config, version, on_disk[version])
        loaded = self._servables[config.name]
        if not wanted or any(v in loaded for v in wanted):
            for version in sorted(set(loaded) - set(wanted)):
                self._unload_version(config.name, version)
        for key in [k for k in self._failures if k[0] == config.name and k[1] not in on_disk]:
            del self._failures[key]

    def _should_try(self, name, version, path) -> bool:
        attempts, fingerprint = self._failures.get((name, version), (0, None))
        if attempts < self.max_load_attempts:
            return True
        if fingerprint != _fingerprint(path):
            self._failures[(name, version)] = (0, None)
            return True
        return False

    def _set_state(self, name, state: VersionState):
        with self._lock:
            states = dict(self._states[name])
            states[state.version] = state
            self._states[name] = states

    def _load_version(self, config: ModelConfig, version: int, path: Path):
        servable_id = f"{{name: {config.name} version: {version}}}"
        self._set_state(config.name, VersionState(version, "LOADING"))
        log.info("Loading servable version %s from %s", servable_id, path)
        started = time.monotonic()
        try:
            servable = self._load(config.name, version, path)
        except Exception as error:  # noqa: BLE001  (any failure leaves the version unserved, retried later)
            attempts, _ = self._failures.get((config.name, version), (0, None))
            self._failures[(config.name, version)] = (attempts + 1, _fingerprint(path))
            # A TensorFlow failure keeps its own status, as in TF Serving's
            # model status; anything else is UNKNOWN.
            if isinstance(error, RestError):
                code, message = error.code, error.message
            else:
                code, message = "UNKNOWN", f"{type(error).__name__}: {error}"
            log.error(
                "Loading servable version %s failed (attempt %d): %s: %s",
                servable_id,
                attempts + 1,
                code,
                message,
            )
            self._set_state(config.name, VersionState(version, "END", code, message))
            return
        self._failures.pop((config.name, version), None)
        with self._lock:
            servables = dict(self._servables[config.name])
            servables[version] = servable
            self._servables[config.name] = servables
        self._set_state(config.name, VersionState(version, "AVAILABLE"))
        log.info("Successfully loaded servable version %s in %.1f s", servable_id, time.monotonic() - started)

    def _unload_version(self, name: str, version: int):
        self._set_state(name, VersionState(version, "UNLOADING"))
        with self._lock:
            servables = dict(self._servables[name])
            servables.pop(version, None)
            self._servables[name] = servables
        # Requests that hold the servable finish with it; it is freed after them.
        self._set_state(name, VersionState(version, "END"))
        log.info("Unloaded servable version {name: %s version: %d}", name, version)

    def start(self):
        """Polls every `poll_wait_seconds` in a daemon thread, until `stop()`."""
        if self.poll_wait_seconds <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_loop, name="kerasbert-serve-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            self.poll()

    def stop(self, timeout=None):
        """Stops the poll thread (after the poll under way, if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
