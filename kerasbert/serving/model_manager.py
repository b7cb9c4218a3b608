"""Served models: their loaded versions, and the poll that keeps them current.

`ModelManager` keeps each model's versions in line with its base path, as
TF Serving's server core does: `VersionPolicy` picks the versions to serve
among the integer-named directories, `load_servable` loads one with plain
TensorFlow (and `tensorflow_text` for the tokenizer's ops in kerasbert's
exports) and warms it up, and `call_signature` runs a signature on numpy
inputs, with TensorFlow's errors turned into `RestError`s.
`read_model_config_file` reads a `--model_config_file`.

Example:

>>> manager = ModelManager([ServedModelConfig("quickstart", Path("saved_models/quickstart"))])
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

from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.rest.errors import RestError, invalid_argument, not_found
from kerasbert.serving.servables import Servable, load_servable

# The server's one logger, whichever of its modules writes.
log = logging.getLogger("kerasbert.serve")


# === Servables ===


# === Models, versions and the file-system poll ===


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

    >>> manager = ModelManager([ServedModelConfig("quickstart", Path("saved_models/quickstart"))])
    >>> manager.poll()
    >>> manager.servable("quickstart").version
    1
    """

    def __init__(self, configs, poll_wait_seconds=1.0, max_load_attempts=5, load=load_servable):
        configs = list(configs)
        if not configs:
            raise ValueError(
                "Invalid value for argument `configs`. Expected at least one ServedModelConfig. Received: []"
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
                raise not_found(f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        servable = versions.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def _version_for_label(self, name, label) -> int:
        config = self.configs.get(name)
        if config is None or label not in config.version_labels:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
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
                raise not_found(f"Could not find version {version} of model {name}")
            return [states[version]]
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
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

    def reload(self, configs):
        """Serves `configs` from now on, as TF Serving's ReloadConfig: new
        models are loaded, removed ones unloaded, the others keep their
        versions and follow their new policy. Returns after one poll.

        Raises:
            ValueError: no configs.
        """
        configs = list(configs)
        if not configs:
            raise ValueError(
                "Invalid value for argument `configs`. Expected at least one ServedModelConfig. Received: []"
            )
        with self._poll_lock:
            new = {config.name: config for config in configs}
            for name in [n for n in self.configs if n not in new]:
                for version in sorted(self._servables[name]):
                    self._unload_version(name, version)
            with self._lock:
                self._servables = {name: self._servables.get(name, {}) for name in new}
                self._states = {name: self._states.get(name, {}) for name in new}
            self.configs = new
        self.poll()

    def _reconcile(self, config: ServedModelConfig):
        on_disk = list_versions(config.base_path)
        if not on_disk and config.name not in self._missing_reported:
            log.warning(
                "No versions of servable %s found under base path %s", config.name, config.base_path
            )
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

    def _load_version(self, config: ServedModelConfig, version: int, path: Path):
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
        log.info(
            "Successfully loaded servable version %s in %.1f s",
            servable_id,
            time.monotonic() - started,
        )

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
        self._thread = threading.Thread(
            target=self._poll_loop, name="kerasbert-serve-poll", daemon=True
        )
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
