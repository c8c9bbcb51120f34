"""TF Serving's config files (ModelServerConfig, BatchingParameters, MonitoringConfig), read as its text
protos and checked as its ServerCore checks them, so that a file this server takes the real image takes
too; and the model config a flag or a volume mount implies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from tfs_api.tensorflow_serving.config import model_server_config_pb2

M = TypeVar("M", bound=Message)


class ConfigError(Exception):
    """A flag or config file the server cannot start with."""


def read_text_proto(path: Path, message: M, flag: str) -> M:
    """Parse a text-proto config file, naming the file and the line of any mistake."""
    try:
        return text_format.Parse(path.read_text(), message)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag}: {path} is not UTF-8 text") from None
    except text_format.ParseError as err:
        raise ConfigError(
            f"{flag}: {path} is not a valid {message.DESCRIPTOR.name} text proto: {err}"
        ) from None


def read_model_config(path: Path) -> model_server_config_pb2.ModelServerConfig:
    config = read_text_proto(path, model_server_config_pb2.ModelServerConfig(), "--model_config_file")
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: expected a model_config_list")
    try:
        check_model_config(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def check_model_config(
    config: model_server_config_pb2.ModelServerConfig,
    previous: model_server_config_pb2.ModelServerConfig | None = None,
) -> None:
    """Refuse a ModelConfigList as ServerCore refuses it, in its order and words: a name listed twice,
    a base path that is not absolute (server_core.cc:117-148); when it replaces `previous`, a model
    whose platform changes (:155-181); a platform other than TensorFlow's (:662-666)."""
    seen: set[str] = set()
    for model in config.model_config_list.config:  # server_core.cc:117-127
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    for model in config.model_config_list.config:  # every base path, then every platform, as TF Serving
        if not model.base_path.startswith("/") and "://" not in model.base_path:  # server_core.cc:131-148
            raise ConfigError(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
    if previous is not None:
        platforms = {model.name: _platform(model) for model in previous.model_config_list.config}
        for model in config.model_config_list.config:
            was, now = platforms.get(model.name), _platform(model)
            if was is not None and now != was:
                raise ConfigError(
                    f"Illegal to change a model's platform. For model {model.name} platform was {was} "
                    f"and new platform requested is {now}"
                )
    for model in config.model_config_list.config:
        platform = _platform(model)
        if platform != "tensorflow":  # server_core.cc:662-666
            raise ConfigError(f"Model {model.name} requests unsupported platform {platform}")


def _platform(model: model_server_config_pb2.ModelConfig) -> str:
    """The platform a model names, as TF Serving reads it (server_core.cc:77-105): `model_platform`,
    or the deprecated `model_type`, which names TensorFlow or nothing TF Serving supports; one of them,
    never both or neither."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ConfigError(
                f"Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise ConfigError(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
        return "tensorflow"
    if not model.model_platform:
        raise ConfigError(
            f"Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return model.model_platform


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    return config


def map_base_paths(
    config: model_server_config_pb2.ModelServerConfig, mapping: tuple[str, str] | None
) -> model_server_config_pb2.ModelServerConfig:
    """The config with base paths under the container prefix read from the host prefix instead.

    This is what a Docker volume mount does for TF Serving in docker compose; it lets `make up` run
    this server on the very config file the TF Serving container reads, whose paths are /models/...
    """
    if mapping is None:
        return config
    container, host = mapping
    mapped = model_server_config_pb2.ModelServerConfig()
    mapped.CopyFrom(config)
    for model in mapped.model_config_list.config:
        if model.base_path == container or model.base_path.startswith(container + "/"):
            model.base_path = host + model.base_path[len(container) :]
    return mapped
