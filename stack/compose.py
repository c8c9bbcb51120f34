"""The model server's command as docker-compose.yml gives it, translated for a process on this machine.

`make up` does not keep its own copy of the server's flags: it reads the `serving` service of the
compose file and applies the service's volumes the way Docker would, so that both doors run the same
flags over the same config files. A bind mount (`./serving/config:/config`) turns container paths in
flag values back into host paths; the named model volume (`models:/models`) becomes
`--base_path_map=/models=MODEL_DIR`, which points the config file's base paths at the host's directory.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SERVICE = "serving"


class ComposeError(Exception):
    """The compose file cannot be read, or its `serving` service is not what this module expects."""


def serving_service(compose_file: Path) -> dict:
    try:
        document = yaml.safe_load(compose_file.read_text())
    except OSError as err:
        raise ComposeError(f"cannot read {compose_file}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ComposeError(f"{compose_file} is not valid YAML: {err}") from None
    services = document.get("services") if isinstance(document, dict) else None
    service = services.get(SERVICE) if isinstance(services, dict) else None
    if not isinstance(service, dict) or not isinstance(service.get("command"), list):
        raise ComposeError(f"{compose_file}: service {SERVICE!r} with a command list not found")
    if not all(isinstance(v, str) and ":" in v for v in service.get("volumes", [])):
        raise ComposeError(f"{compose_file}: service {SERVICE!r}: volumes must be SOURCE:TARGET strings")
    return service


def _mounts(service: dict, root: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """({container path: host path} for bind mounts, [(volume name, container path)] for volumes)."""
    binds: dict[str, Path] = {}
    volumes: list[tuple[str, str]] = []
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            binds[target.rstrip("/")] = (root / source).resolve()
        else:
            volumes.append((source, target.rstrip("/")))
    return binds, volumes


def _host_value(value: str, binds: dict[str, Path]) -> str:
    for target, host in binds.items():
        if value == target or value.startswith(target + "/"):
            return str(host) + value[len(target) :]
    return value


def server_flags(compose_file: Path, model_dir: Path, ports: dict[str, int] | None = None) -> list[str]:
    """The `serving` service's flags for `python -m serving` here: host paths, MODEL_DIR for the model
    volume, and `ports` ({"port": 8500, "rest_api_port": 8501}) in place of the published ones."""
    service = serving_service(compose_file)
    binds, volumes = _mounts(service, compose_file.parent)
    if len(volumes) > 1:
        raise ComposeError(f"{compose_file}: service {SERVICE!r} mounts more than the one model volume")
    flags = []
    for flag in service["command"]:
        name, sep, value = str(flag).partition("=")
        if ports and name.lstrip("-") in ports:
            value = str(ports[name.lstrip("-")])
        flags.append(name + sep + _host_value(value, binds))
    flags += [f"--base_path_map={target}={model_dir.resolve()}" for _, target in volumes]
    return flags
