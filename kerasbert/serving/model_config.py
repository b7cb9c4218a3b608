"""Which models to serve and which of their versions: TF Serving's `ModelConfig` and `--model_config_file`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


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
            raise ValueError(
                "A `specific` version policy needs at least one version in `versions`."
            )

    def select(self, available) -> list[int]:
        """The versions to serve among `available`, highest first."""
        available = sorted(set(available), reverse=True)
        if self.kind == "latest":
            return available[: self.num_versions]
        if self.kind == "all":
            return available
        return [v for v in available if v in self.versions]


@dataclasses.dataclass(frozen=True)
class ServedModelConfig:
    """One served model, as TF Serving's `ModelConfig` message describes it (`kerasbert.config.ModelConfig` is a run's backbone).

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


def read_model_config_file(path) -> list[ServedModelConfig]:
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
    return served_model_configs(config, str(path))


def served_model_configs(config, where: str) -> list[ServedModelConfig]:
    """The models of a `ModelServerConfig` message (a config file's, or a ReloadConfigRequest's).

    Args:
        config: a `model_server_config_pb2.ModelServerConfig`.
        where: what error messages name it by, e.g. the file's path.

    Raises:
        ValueError: the config is not one this server can serve; the message
            starts with `where`.
    """
    source = where
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(
            f"{source}: expected a `model_config_list {{ config {{ ... }} }}`; custom_model_config is not supported"
        )
    configs = []
    for index, entry in enumerate(config.model_config_list.config):
        where = f"{source}: model_config_list.config[{index}]"
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
            ServedModelConfig(
                name=entry.name,
                base_path=Path(entry.base_path).expanduser().absolute(),
                version_policy=policy,
                version_labels=dict(entry.version_labels),
            )
        )
    if not configs:
        raise ValueError(f"{source}: model_config_list has no `config`")
    return configs
