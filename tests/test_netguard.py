"""The socket guard itself: if it silently stopped working, offline claims would be unproven."""

import socket
import subprocess
import sys

import pytest

import netguard


@pytest.mark.allow_blocked_network
def test_outside_connections_and_lookups_are_blocked_and_recorded():
    before = len(netguard.attempts)
    with pytest.raises(netguard.NetworkBlocked):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never routed
    with pytest.raises(netguard.NetworkBlocked):
        socket.getaddrinfo("huggingface.co", 443)
    assert len(netguard.attempts) == before + 2


def test_loopback_stays_open():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            conn, _ = server.accept()
            conn.close()


@pytest.mark.allow_blocked_network
def test_subprocesses_are_guarded_too():
    code = "import socket; socket.getaddrinfo('pypi.org', 443)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "NetworkBlocked" in out.stderr
