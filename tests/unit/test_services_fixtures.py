"""The service fixtures really start, stop and restart the processes the other tests rely on."""

from __future__ import annotations

import socket

import pytest

from tests.support.services import MosquittoProcess, RedisProcess, wait_for_port


def _redis_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


@pytest.mark.integration
def test_redis_restart_keeps_port(redis_server: RedisProcess) -> None:
    port = redis_server.port
    assert _redis_ping(port) == b"+PONG\r\n"
    redis_server.kill()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)
    redis_server.start()
    assert redis_server.port == port
    assert _redis_ping(port) == b"+PONG\r\n"


@pytest.mark.integration
def test_mosquitto_stop_start(mosquitto: MosquittoProcess) -> None:
    pid = mosquitto.pid
    mosquitto.stop()
    assert not mosquitto.running()
    mosquitto.start()
    assert mosquitto.pid != pid
    wait_for_port(mosquitto.port)
