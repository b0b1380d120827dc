"""Checking, before anything starts, that the ports `bookmarket up` will listen on are free."""
from __future__ import annotations

import socket
from collections.abc import Sequence


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind host:port now (SO_REUSEADDR, as gunicorn binds, so TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_problem(wanted: Sequence[tuple[int, str]]) -> str | None:
    """The first (port, option) that cannot be used, as one line naming the option that changes it; else None."""
    seen: dict[int, str] = {}
    for port, option in wanted:
        if port in seen:
            return f"port {port} is given to both {seen[port]} and {option}; choose another with {option}"
        if not port_is_free(port):
            return f"port {port} is in use; choose another with {option}"
        seen[port] = option
    return None
