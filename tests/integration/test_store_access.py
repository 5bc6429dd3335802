"""The store reachable by the daemon alone: the shipped redis.conf and ACL on a real
redis-server, the store's start-up checks, and the daemon refusing a store others can write.

The attack this answers: any local user talking to the cabinet's Redis could run
``CONFIG SET appendfsync no`` or rewrite an order's code hash, then type the code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from controller.store import NewEvent, Store
from controller.store.errors import StoreConfigError
from tests.support.services import RedisProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "redis.conf"
ACL = ROOT / "deploy" / "redis-locker.acl"


class ShippedRedis:
    """redis-server running deploy/redis.conf and deploy/redis-locker.acl as the installer
    writes them; only the paths move into the test's directory."""

    def __init__(self, workdir: Path, *, socket_perm: str = "770") -> None:
        self.workdir = workdir
        self.password = secrets.token_urlsafe(24)
        self.password_file = workdir / "redis-password"
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o400)
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        acl = workdir / "redis-locker.acl"
        acl.write_text("".join(line + "\n" for line in ACL.read_text().splitlines()
                               if not line.startswith("#"))
                       .replace("@PASSWORD_SHA256@", digest)
                       .replace("@DEFAULT_SHA256@", secrets.token_hex(32)))
        self.socket = workdir / "run" / "redis.sock"
        self.socket.parent.mkdir(mode=0o750)
        text = CONF.read_text()
        assert "aclfile /etc/redis/redis-locker.acl" in text
        conf = workdir / "redis-locker.conf"
        conf.write_text(text.replace("/var/lib/redis/locker", str(workdir))
                        .replace("/run/redis-locker/redis.sock", str(self.socket))
                        .replace("/run/redis-locker/", f"{self.socket.parent}/")
                        .replace("/etc/redis/redis-locker.acl", str(acl))
                        .replace("unixsocketperm 770", f"unixsocketperm {socket_perm}")
                        .replace("supervised systemd", "supervised no"))
        self.conf = conf
        self.start()

    def start(self) -> None:
        """Start redis-server on the files written above (again after :meth:`close`)."""
        self.proc = subprocess.Popen(["redis-server", str(self.conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._listening():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "redis-server did not open its socket"
            time.sleep(0.02)

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
            return True

    @property
    def url(self) -> str:
        return (f"unix://{self.socket}?db=0&username=locker"
                f"&password_file={self.password_file}")

    def raw(self, **auth: str) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), decode_responses=True, **auth)

    def output(self) -> str:
        return self.proc.stdout.read().decode() if self.proc.stdout else ""

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[ShippedRedis]:
    server = ShippedRedis(tmp_path)
    try:
        yield server
    finally:
        server.close()


def test_an_unauthenticated_local_user_can_do_nothing(shipped: ShippedRedis) -> None:
    anyone = shipped.raw()
    for command in (("CONFIG", "SET", "appendfsync", "no"), ("GET", "x"), ("PING",),
                    ("HSET", "locker:s:c:codes", "o-1", "{}")):
        with pytest.raises(redis.exceptions.AuthenticationError):
            anyone.execute_command(*command)
    anyone.close()


def test_the_daemons_user_has_only_the_commands_the_store_needs(
    shipped: ShippedRedis,
) -> None:
    locker = shipped.raw(username="locker", password=shipped.password)
    assert locker.ping()
    for command in (("CONFIG", "SET", "appendfsync", "no"), ("FLUSHALL",), ("KEYS", "*"),
                    ("EVAL", "return 1", "0"), ("SET", "elsewhere", "1"), ("DEBUG", "SLEEP", "0"),
                    ("ACL", "SETUSER", "locker", "+@all")):
        with pytest.raises(redis.exceptions.ResponseError,
                           match=r"no permissions|not allowed|unknown command"):
            locker.execute_command(*command)
    locker.close()


async def test_what_the_store_committed_survives_a_restart_of_the_shipped_redis(
    shipped: ShippedRedis,
) -> None:
    """Transactions included: Redis replays its append-only file as the default user, and
    refused every MULTI/EXEC of it while that user was off (the shipped ACL keeps it on,
    behind a password nobody has)."""
    store = await Store.connect(shipped.url, "locker:fr-lyon-07", "cab-01")
    try:
        await store.new_boot()
        events = await store.commit(
            [NewEvent("door_opened", {"authorised": True}, time.time(), "A01")],
            compartments={"A01": {"state": "loaded"}}, doors={"A01": {"open": True}})
        assert await store.save_codes(
            "o-1", [{"code_id": "collect-0", "purpose": "collect", "verifier": "v1"}]) == []
    finally:
        await store.close()
    shipped.close()
    assert "NOPERM" not in shipped.output()
    shipped.start()
    store = await Store.connect(shipped.url, "locker:fr-lyon-07", "cab-01")
    try:
        assert [e.id for e in await store.pending()] == [events[0].id]
        assert await store.load_compartment("A01") == {"state": "loaded"}
        assert await store.load_doors() == {"A01": {"open": True}}
        assert await store.load_codes("o-1") is not None
        assert await store.find_code("v1") is not None
    finally:
        await store.close()
    anyone = shipped.raw()  # and an unauthenticated client still can do nothing
    with pytest.raises(redis.exceptions.AuthenticationError):
        anyone.ping()
    anyone.close()


async def test_the_store_works_through_the_acl_user_with_every_operation(
    shipped: ShippedRedis,
) -> None:
    """Every store operation the daemon uses, on the ACL user: nothing it needs is missing."""
    store = await Store.connect(shipped.url, "locker:fr-lyon-07", "cab-01")
    try:
        boot = await store.new_boot()
        assert (await store.current_boot()) is not None
        assert await store.boots()
        event = await store.append("door_opened", {"x": 1}, time.time(), compartment="A01")
        assert [e.id for e in await store.pending()] == [event.id]
        assert await store.depth() == 1
        assert await store.last_seq() == event.seq
        assert await store.ack(event.id)
        assert await store.delivered()
        await store.begin_command("c-1", "d" * 64, {"boot_id": boot.id, "uptime_ms": 1})
        assert await store.record_pulse_intent("c-1", "A01")
        await store.finish_command("c-1", {"ok": True})
        assert (await store.get_command("c-1")) is not None
        assert await store.unfinished_commands() == []
        await store.save_compartment("A01", {"state": "free"})
        assert await store.load_compartment("A01") == {"state": "free"}
        assert await store.load_compartments()
        await store.commit([NewEvent("door_closed", {}, time.time(), "A01")],
                           compartments={"A01": {"state": "free"}}, doors={"A01": {"open": False}})
        await store.save_order("o-1", {"compartment": "A01"})
        assert await store.load_order("o-1") is not None
        assert await store.load_orders()
        assert await store.stored_order_ids() == {"o-1"}
        assert await store.save_codes(
            "o-1", [{"code_id": "c", "purpose": "collect", "verifier": "v2"}]) == []
        assert await store.load_codes("o-1") is not None
        assert await store.find_code("v2") is not None
        assert await store.mark_code_used("o-1", "c")
        assert await store.code_used_at("o-1", "c") is not None
        assert await store.delete_codes("o-1")
        assert await store.delete_order("o-1")
        assert await store.delete_compartment("A01")
        await store.save_lockout("lane", {"failures": 1}, 60)
        assert await store.load_lockout("lane") is not None
        assert await store.clear_lockout("lane")
        await store.save_config_overlay({"timing": {}})
        assert await store.load_config_overlay() == {"timing": {}}
        await store.save_revocations({"serial": 1, "revoked": {}})
        assert await store.load_revocations() == {"serial": 1, "revoked": {}}
        await store.audit("block", actor="test", compartment="A01", details={})
        assert await store.audit_log()
        assert await store.audit_length() == 1
    finally:
        await store.close()


async def test_a_password_file_others_can_read_is_refused(shipped: ShippedRedis) -> None:
    shipped.password_file.chmod(0o644)
    with pytest.raises(StoreConfigError, match="accessible by group or others"):
        await Store.connect(shipped.url, "locker:fr-lyon-07", "cab-01")


def test_a_socket_every_local_user_can_write_is_refused(tmp_path: Path) -> None:
    server = ShippedRedis(tmp_path, socket_perm="777")
    try:
        with pytest.raises(StoreConfigError, match="writable by every local user"):
            asyncio.run(Store.connect(server.url, "locker:fr-lyon-07", "cab-01"))
        # And the daemon says so and does not start (exit 2, the error on stderr).
        config = ROOT / "deploy" / "sim-cabinet.toml"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-m", "controller.daemon", "--config", str(config),
             "--set", f"redis.url={server.url}"],
            capture_output=True, text=True, timeout=60, env=env, check=False, cwd=ROOT)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert re.search(r"store refused at start-up: .*writable by every local user",
                         proc.stderr), proc.stderr
    finally:
        server.close()


async def test_a_socket_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    server = ShippedRedis(tmp_path)
    try:
        server.socket.parent.chmod(0o777)
        with pytest.raises(StoreConfigError, match="writable by every local user"):
            await Store.connect(server.url, "locker:fr-lyon-07", "cab-01")
    finally:
        server.socket.parent.chmod(0o750)
        server.close()


async def test_production_refuses_redis_over_tcp_elsewhere_or_without_a_password(
    redis_server: RedisProcess,
) -> None:
    url = redis_server.url
    assert url.startswith("redis://127.0.0.1:")
    with pytest.raises(StoreConfigError, match="without a password"):
        await Store.connect(url, "locker:fr-lyon-07", "cab-01", production=True)
    with pytest.raises(StoreConfigError, match="another machine"):
        await Store.connect("redis://10.20.30.40:6390/0", "locker:fr-lyon-07", "cab-01",
                            production=True)
    # Outside production (the simulator, the test rigs), loopback TCP stays usable.
    store = await Store.connect(url, "locker:fr-lyon-07", "cab-01")
    await store.close()
