"""Reaching a Ray cluster: the optional import and the address check, light enough for the CLI's early checks.

>>> check_address("local")                       # starts nothing: only says whether Ray could be asked
>>> check_address("nonsense")
Traceback (most recent call last):
lookahead.fleet.cluster.FleetError: --ray must be local, auto, host:port or ray://host:port; got 'nonsense'
"""
from __future__ import annotations

import socket

INSTALL_HINT = "pip install 'lookahead[ray]'"


class FleetError(ValueError):
    """The cluster cannot run this (one line for the user)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise FleetError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_address(address: str, timeout: float = 5.0) -> None:
    """FleetError unless `address` is local, auto, or a "host:port" / "ray://host:port" that accepts TCP.

    Checked here because Ray itself retries a dead address for minutes.
    """
    if address in ("local", "auto"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit()):
        raise FleetError(f"--ray must be local, auto, host:port or ray://host:port; got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise FleetError(f"cannot reach the Ray cluster at {address!r}: {e.strerror or e}") from None
