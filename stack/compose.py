"""The model server's command as docker-compose.yml gives it, translated for a process on this machine.

`make up` does not keep its own copy of the server's flags: it reads the `serving` service of the
compose file and applies the service's volumes the way Docker would, so that both doors run the same
flags over the same config files. A bind mount (`./serving/config:/config`) turns container paths in
flag values back into host paths; the named model volume (`models:/models`) becomes
`--base_path_map=/models=MODEL_DIR`, which points the config file's base paths at the host's directory.
Each part also takes its service's `restart:` policy from here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stack.restarts import RestartPolicy

SERVICE = "serving"


class ComposeError(Exception):
    """The compose file cannot be read, or its `serving` service is not what this module expects."""


def service(compose_file: Path, name: str) -> dict:
    try:
        document = yaml.safe_load(compose_file.read_text())
    except OSError as err:
        raise ComposeError(f"cannot read {compose_file}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ComposeError(f"{compose_file} is not valid YAML: {err}") from None
    services = document.get("services") if isinstance(document, dict) else None
    found = services.get(name) if isinstance(services, dict) else None
    if not isinstance(found, dict):
        raise ComposeError(f"{compose_file}: service {name!r} not found")
    return found


def restart_policy(compose_file: Path, name: str) -> RestartPolicy:
    """The service's `restart:` (Compose's default: "no"), for the process that stands in for it."""
    try:
        return RestartPolicy.parse(service(compose_file, name).get("restart", "no"))
    except ValueError as err:
        raise ComposeError(f"{compose_file}: service {name!r}: {err}") from None


def serving_service(compose_file: Path) -> dict:
    found = service(compose_file, SERVICE)
    if not isinstance(found.get("command"), list):
        raise ComposeError(f"{compose_file}: service {SERVICE!r} with a command list not found")
    if not all(isinstance(v, str) and ":" in v for v in found.get("volumes", [])):
        raise ComposeError(f"{compose_file}: service {SERVICE!r}: volumes must be SOURCE:TARGET strings")
    return found


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


def server_flags(
    compose_file: Path, model_dir: Path, ports: dict[str, int] | None = None, host: str = "127.0.0.1"
) -> list[str]:
    """The `serving` service's flags for `python -m serving` here: host paths, MODEL_DIR for the model
    volume, `ports` ({"port": 8500, "rest_api_port": 8501}) in place of the published ones, and the
    address to listen on (as the published ports' bind address does for the container)."""
    serving = serving_service(compose_file)
    binds, volumes = _mounts(serving, compose_file.parent)
    if len(volumes) > 1:
        raise ComposeError(f"{compose_file}: service {SERVICE!r} mounts more than the one model volume")
    flags = []
    for flag in serving["command"]:
        name, sep, value = str(flag).partition("=")
        if ports and name.lstrip("-") in ports:
            value = str(ports[name.lstrip("-")])
        flags.append(name + sep + _host_value(value, binds))
    flags += [f"--base_path_map={target}={model_dir.resolve()}" for _, target in volumes]
    return [*flags, f"--host={host}"]
