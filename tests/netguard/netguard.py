"""A socket guard for tests: any connection or DNS lookup beyond this machine fails.

Installed in the pytest process by conftest.py and, through sitecustomize.py on
PYTHONPATH, in every Python subprocess the tests start (notebook kernels included).
Attempts are raised as NetworkBlocked *and* recorded (in memory and in the file named by
DEPLOYLAB_NETGUARD_LOG), so a library that swallows the error still fails the test.
"""

from __future__ import annotations

import ipaddress
import os
import socket

attempts: list[str] = []
_installed = False


class NetworkBlocked(ConnectionRefusedError):
    """Raised instead of reaching the network during tests."""


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in ("", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False  # a host name other than localhost needs DNS: that is the network
    return ip.is_loopback or ip.is_unspecified


def _is_ip(host) -> bool:
    try:
        ipaddress.ip_address(str(host.decode() if isinstance(host, bytes) else host).split("%")[0])
        return True
    except ValueError:
        return False


def _block(what: str):
    attempts.append(what)
    log = os.environ.get("DEPLOYLAB_NETGUARD_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {what}\n")
    raise NetworkBlocked(f"network access is blocked in tests: {what}")


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    connect, connect_ex, getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                        socket.getaddrinfo)
    inet = (socket.AF_INET, socket.AF_INET6)

    def guarded_connect(self, address):
        if self.family in inet and not _is_local(address[0]):
            _block(f"connect to {address}")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in inet and not _is_local(address[0]):
            _block(f"connect to {address}")
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        # a numeric address needs no DNS; connecting to it is what connect() guards
        if not _is_local(host) and not _is_ip(host):
            _block(f"DNS lookup of {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo
