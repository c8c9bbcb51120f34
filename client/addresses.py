"""Where the model server is, as a person writes it, checked before any call: a typo is then one line
saying what to write, not a call that fails after its retries (gRPC takes a bare host as port 443,
and a URL as a host name it cannot resolve)."""

from __future__ import annotations

from urllib.parse import urlsplit

# Targets gRPC resolves by a scheme of its own (unix:/run/tfs.sock, dns:///host:8500): taken as given.
GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def grpc_target_problem(target: str) -> str | None:
    """Why `target` is not a gRPC HOST:PORT (or a target in one of gRPC's own schemes), worded to
    follow the flag or variable that gave it; None when it is one."""
    if target.startswith(GRPC_SCHEMES):
        return None
    if "://" in target:
        return f"takes HOST:PORT such as localhost:8500, not a URL: {target!r}"
    if not _well_formed(f"//{target}", port_required=True):
        return f"takes HOST:PORT such as localhost:8500, with the port: {target!r}"
    return None


def rest_url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) URL with a host (its port may be left to its scheme); None when it
    is one."""
    if url.startswith(("http://", "https://")) and _well_formed(url, port_required=False):
        return None
    return f"takes a URL such as http://localhost:8501, not {url!r}"


def _well_formed(address: str, port_required: bool) -> bool:
    """A host, and a port in range when one is given (or required)."""
    try:
        parts = urlsplit(address)
        port = parts.port  # raises for a port over 65535 or not a number
    except ValueError:  # that, or `http://[::1`
        return False
    return bool(parts.hostname) and (port is not None or not port_required)
