"""The store's Redis client (:mod:`controller.store.resp`) against a scripted server on a
loopback socket: replies late, short, garbled, split, refused; and its URL forms, and the
commands it may send against the shipped ACL. Its answers beside redis-py's on a real
redis-server are in ``tests/integration/test_resp_client.py``."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.store import Store, StoreFull, StoreRejected, StoreTimeout, StoreUnavailable, resp

ROOT = Path(__file__).resolve().parents[3]

Reply = bytes | Callable[[asyncio.StreamWriter], Any] | None


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readuntil(b"\r\n")
    assert header[:1] == b"*", header
    args = []
    for _ in range(int(header[1:-2])):
        size = int((await reader.readuntil(b"\r\n"))[1:-2])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


class ScriptedRedis:
    """Answers each command received with the next item of ``script`` (bytes to send, a
    callable given the writer, or None: no answer). Counts connections; keeps what it
    received. The client's end-of-exchange marks (``PING <n>``) are echoed as Redis
    does, outside the script, unless ``echo_marks`` is False."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.received: list[list[bytes]] = []
        self.marks: list[bytes] = []
        self.echo_marks = True
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                command = await _read_command(reader)
                if command[0] == b"PING" and len(command) == 2:
                    self.marks.append(command[1])
                    if self.echo_marks:
                        writer.write(b"$%d\r\n%b\r\n" % (len(command[1]), command[1]))
                        await writer.drain()
                        continue
                else:
                    self.received.append(command)
                reply = self.script.pop(0) if self.script else b"+OK\r\n"
                if callable(reply):
                    outcome = reply(writer)
                    if asyncio.iscoroutine(outcome):
                        await outcome
                elif reply is not None:
                    writer.write(reply)
                await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedRedis]:
    fake = ScriptedRedis()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    try:
        yield fake
    finally:
        fake.server.close()
        for writer in fake.writers:
            writer.close()
        if fake.tasks:  # each handler ends on its closed connection
            await asyncio.wait(fake.tasks, timeout=5)


def _client(fake: ScriptedRedis, timeout: float = 0.3) -> resp.Client:
    return resp.Client.from_url(fake.url, socket_timeout=timeout, socket_connect_timeout=1)


async def test_a_late_answer_is_never_read_as_the_next_ones(scripted: ScriptedRedis) -> None:
    """No answer within the timeout: Timeout, the connection closed; the late answer (sent
    on the old connection) never reaches the next command, which gets a new connection."""
    late: list[asyncio.StreamWriter] = []
    scripted.script = [late.append, b"$5\r\nfresh\r\n"]
    client = _client(scripted)
    with pytest.raises(resp.Timeout):
        await client.get("a")
    late[0].write(b"$4\r\nlate\r\n")
    assert await client.get("b") == "fresh"
    assert scripted.connections == 2
    await client.aclose()


def _bulk(text: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(text), text)


async def test_an_answer_added_on_the_way_is_never_read_as_another_ones(
    scripted: ScriptedRedis,
) -> None:
    """RESP2 has no request id. A duplicated answer (a faulty proxy, a stray reply) would
    shift every later answer by one; the exchange's mark finds it out and the connection is
    closed, so no command gets another one's answer."""
    client = _client(scripted)
    # GET's answer twice, then the mark's echo: the duplicate lands where the mark was due.
    scripted.script = [_bulk(b"first") * 2, _bulk(b"second")]
    with pytest.raises(resp.ProtocolError, match="out of step"):
        await client.get("a")
    assert await client.get("b") == "second"  # on a new connection, in step
    assert scripted.connections == 2

    # The closing mark's echo twice: the next exchange reads it where its opening mark's
    # echo is due, and is found out.
    scripted.echo_marks = False

    def echo(writer: asyncio.StreamWriter) -> None:
        writer.write(_bulk(scripted.marks[-1]))

    def echo_twice(writer: asyncio.StreamWriter) -> None:
        writer.write(_bulk(scripted.marks[-1]) * 2)

    scripted.script = [echo, _bulk(b"third"), echo_twice, echo, _bulk(b"fourth"), echo]
    assert await client.get("c") == "third"
    with pytest.raises(resp.ProtocolError, match="out of step"):
        await client.get("d")
    await client.aclose()


async def test_part_of_an_answer_added_on_the_way_is_found_out(
    scripted: ScriptedRedis,
) -> None:
    """An answer and half of it again (``+OK\\r\\n+O``): the leftover would merge with
    the next answer into valid RESP (``+O:0``), with the closing mark in step. The opening
    mark's echo is spoilt instead."""
    # The handshake (CLIENT SETNAME, not marked) gets it: the next exchange must not.
    client = resp.Client.from_url(scripted.url, socket_timeout=0.3, client_name="c1")

    def ok_and_a_half(writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK\r\n+O")

    scripted.script = [ok_and_a_half, b":0\r\n"]
    with pytest.raises(resp.ProtocolError):  # out of step, or no longer RESP at all
        await client.zcard("z")
    assert scripted.received[0][:2] == [b"CLIENT", b"SETNAME"]
    await client.aclose()


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (b"?what\r\n", resp.ProtocolError, "not a RESP2 reply"),
        (b"$3\r\n\xff\xfe\x00\r\n", resp.ProtocolError, "not UTF-8"),
        (b"$1099511627776\r\n", resp.ProtocolError, "bulk string of 1099511627776"),
        (b"$3\r\nabcde\r\n", resp.ProtocolError, "not ended by CRLF"),
        (b":12a\r\n", resp.ProtocolError, "not an integer"),
        (b"*1\r\n" * 9 + b":1\r\n", resp.ProtocolError, "depth 8"),
        (b"-LOADING Redis is loading the dataset in memory\r\n", resp.ConnectionFailed,
         "LOADING"),
        (b"-OOM command not allowed when used memory > 'maxmemory'.\r\n", resp.ReplyError,
         "OOM"),
    ],
)
async def test_a_bad_or_refusing_reply_is_a_clear_error(
    scripted: ScriptedRedis, reply: bytes, error: type[Exception], match: str
) -> None:
    scripted.script = [reply, b"+PONG\r\n"]
    client = _client(scripted)
    with pytest.raises(error, match=re.escape(match)):
        await client.get("k")
    assert await client.ping() is True  # on a connection in a known state
    assert scripted.connections == (2 if issubclass(error, resp.ProtocolError) else 1)
    await client.aclose()


async def test_a_reply_in_one_byte_pieces(scripted: ScriptedRedis) -> None:
    reply = b"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:7\r\n+x\r\n"

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for i in range(len(reply)):
            writer.write(reply[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0)

    scripted.script = [trickle]
    client = _client(scripted, timeout=5)
    assert await client.mget(["a", "b", "c"]) == ["a", None, [7, "x"]]
    await client.aclose()


async def test_a_command_cancelled_mid_reply_closes_its_connection(
    scripted: ScriptedRedis,
) -> None:
    half: list[asyncio.StreamWriter] = []
    started = asyncio.Event()

    def start(writer: asyncio.StreamWriter) -> None:
        writer.write(b"$10\r\nhalf")
        half.append(writer)
        started.set()

    scripted.script = [start, b"$3\r\nnew\r\n"]
    client = _client(scripted, timeout=5)
    task = asyncio.ensure_future(client.get("a"))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0)  # the half reply on its way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    half[0].write(b" of it\r\n")
    assert await client.get("b") == "new"
    assert scripted.connections == 2
    await client.aclose()


async def test_the_handshake_authenticates_selects_and_names(scripted: ScriptedRedis) -> None:
    port = scripted.url.rsplit(":", 1)[1].split("/")[0]
    client = resp.Client.from_url(f"redis://127.0.0.1:{port}/3?username=locker",
                                  password="pw", client_name="locker-controller.c1")
    scripted.script = [b"+OK\r\n", b"+OK\r\n", b"+OK\r\n", b"+PONG\r\n"]
    assert await client.ping() is True
    assert scripted.received == [[b"AUTH", b"locker", b"pw"], [b"SELECT", b"3"],
                                 [b"CLIENT", b"SETNAME", b"locker-controller.c1"], [b"PING"]]
    assert scripted.marks == [b"1", b"2"]  # the handshake is not marked; a command is
    await client.aclose()

    refused = resp.Client.from_url(f"redis://:bad@127.0.0.1:{port}")
    scripted.script = [b"-WRONGPASS invalid username-password pair\r\n"]
    with pytest.raises(resp.ConnectionFailed, match=r"AUTH refused.*WRONGPASS"):
        await refused.ping()
    await refused.aclose()


async def test_the_store_translates_the_clients_errors(scripted: ScriptedRedis) -> None:
    """Through the Store, as the daemon meets them."""
    client = _client(scripted)
    store = Store(client, "locker", "cab-01")
    scripted.script = [None]
    with pytest.raises(StoreTimeout):
        await store.ping()
    scripted.script = [b"-MISCONF Errors writing to the AOF file\r\n"]
    with pytest.raises(StoreFull):
        await store.probe_write()
    scripted.script = [b"-NOPERM this user has no permissions\r\n"]
    with pytest.raises(StoreRejected, match="NOPERM"):
        await store.probe_write()
    # A read is tried once more on a fresh connection (Redis restarted): both refused.
    scripted.script = [b"-LOADING loading\r\n", b"-LOADING loading\r\n"]
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()


async def test_a_dead_connection_in_a_transaction_is_not_retried_after_exec(
    scripted: ScriptedRedis,
) -> None:
    """EXEC sent, the connection dies before the answer: the write may have been applied,
    so the store reports StoreUnavailable and never sends it again."""

    def die(writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    client = _client(scripted)
    store = Store(client, "locker", "cab-01")
    # new_boot: WATCH, GET (immediate), then MULTI ... EXEC in one write.
    scripted.script = [b"+OK\r\n", b"$-1\r\n", die]
    with pytest.raises(StoreUnavailable):
        await store.new_boot()
    names = [command[0] for command in scripted.received]
    assert names.count(b"EXEC") <= 1
    assert names.count(b"MULTI") == 1
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:99999/0", "bad port"),
        ("redis://h:0/0", "bad port: 0"),
        ("redis://h:/0", "bad port: empty"),
        ("redis://h/0#x", "no #fragment"),
        ("redis://h/0?=x", "without a name"),
        ("redis://h/0?username=", "query item 'username' is empty"),
        ("rediss://h/0?ssl_check_hostname=true&ssl_cert_reqs=none", "needs the server's"),
        ("rediss://h/0?ssl_ca_certs=/no/such.pem", "ssl_ca_certs '/no/such.pem'"),
        ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile without ssl_certfile"),
        ("redis://h/0?db=1", "given twice"),
        ("redis://h/x", "whole number"),
        ("redis://h/0?timeout=3", "unknown query item(s) timeout"),
        ("redis://h/0?ssl_ca_certs=x", "unknown query item(s) ssl_ca_certs"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
        ("unix://", "socket's path"),
        ("http://h", "scheme"),
    ],
)
def test_bad_urls_are_refused_naming_the_fault(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        resp.parse_url(url)


def test_url_forms() -> None:
    ep = resp.parse_url("unix:///run/r.sock?db=2&username=locker", password="pw")
    assert (ep.path, ep.db, ep.username, ep.password) == ("/run/r.sock", 2, "locker", "pw")
    ep = resp.parse_url("redis://u:p%40ss@127.0.0.1:6380/4")
    assert (ep.host, ep.port, ep.db, ep.username, ep.password) == ("127.0.0.1", 6380, 4, "u",
                                                                    "p@ss")
    ep = resp.parse_url("rediss://localhost?ssl_cert_reqs=none")
    assert ep.tls is not None
    assert ep.port == 6379
    assert ep.db == 0


class _Recorder(resp._Commands):
    def __init__(self) -> None:
        self.sent: set[str] = set()

    def _run(self, args: tuple[Any, ...], convert: Any = None) -> Any:
        self.sent.add(resp._command_name(args))


def _acl_commands() -> set[str]:
    text = (ROOT / "deploy" / "redis-locker.acl").read_text()
    line = next(x for x in text.splitlines() if x.startswith("user locker "))
    return {word[1:].lower() for word in line.split() if word.startswith("+")}


def test_the_shipped_acl_allows_every_command_the_client_sends() -> None:
    """Every command method, called: only names of COMMANDS are sent, and the shipped ACL
    of the store's Redis user allows each (a command missing there fails on a cabinet
    only, with NOPERM)."""
    recorder = _Recorder()
    calls = {
        "set": ("k", "v"), "hset": ("k", "f", "v"), "xadd": ("k", {"a": "b"}),
        "xtrim": ("k",), "zadd": ("k", {"m": 1}), "mget": (["a"],), "hmget": ("k", ["f"]),
        "lrange": ("k", 0, 1), "ltrim": ("k", 0, 1), "zrange": ("k", 0, 1),
        "zrangebyscore": ("k", 0, 1), "pexpire": ("k", 1), "hget": ("k", "f"),
        "hsetnx": ("k", "f", "v"), "lpush": ("k", "v"), "hdel": ("k", "f"),
        "zrem": ("k", "m"),
    }
    methods = [name for name in vars(resp._Commands) if not name.startswith("_")]
    for name in methods:
        args = calls.get(name, () if name in ("ping", "time") else ("k",))
        kwargs = {"minid": "0-1"} if name == "xtrim" else {}
        getattr(recorder, name)(*args, **kwargs)
    handshake = {"AUTH", "SELECT", "CLIENT|SETNAME", "WATCH", "UNWATCH", "MULTI", "EXEC"}
    assert recorder.sent | handshake == resp.COMMANDS
    missing = {name.lower() for name in resp.COMMANDS} - _acl_commands()
    assert not missing, f"deploy/redis-locker.acl lacks +{' +'.join(sorted(missing))}"


@pytest.mark.parametrize(
    ("url", "issue"),
    [
        ("redis://127.0.0.1:6379/0?timeout=3", "unknown query item(s) timeout"),
        ("redis://127.0.0.1:6379/zero", "whole number"),
        ("redis://127.0.0.1:0/0", "bad port: 0"),
        ("redis://127.0.0.1:6379/0?password_file=", "password_file is empty"),
        ("redis://127.0.0.1:6379/0", None),
    ],
)
def test_the_config_check_reads_the_url_as_the_client_does(
    tmp_path: Path, url: str, issue: str | None
) -> None:
    """``--check`` and ``lockerctl config check`` refuse what the start would refuse."""
    from controller.daemon.startup import local_file_issues
    from controller.settings import load_settings

    config = ROOT / "controller" / "data" / "sim-cabinet.toml"
    settings = load_settings(config, env={}, overrides={
        "redis.url": url, "security.code_key_file": str(tmp_path / "code.key")})
    found = [line for line in local_file_issues(settings, config) if line.startswith("redis")]
    assert len(found) == (0 if issue is None else 1), found
    if issue is not None:
        assert issue in found[0]


class _NullWriter:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


_REPLY_PIECES = [b"+OK\r\n", b"-ERR x\r\n", b":12\r\n", b"$3\r\nabc\r\n", b"$-1\r\n", b"*2\r\n",
                 b"*-1\r\n", b"$0\r\n\r\n", b"\r\n", b"$", b"*", b":", b"-1", b"\xff", b"\x00",
                 b"99999999999\r\n", b"$2\r\n\xc3\xa9\r\n"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_REPLY_PIECES), st.binary(max_size=12)),
                max_size=12), st.integers(min_value=1, max_value=3))
def test_any_bytes_give_answers_or_a_clean_failure(pieces: list[bytes], replies: int) -> None:
    """Whatever the server sends: answers, or one of the client's errors with the
    connection closed (never another exception, never a connection left half-read)."""

    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(pieces))
        reader.feed_eof()
        writer = _NullWriter()
        conn = resp._Connection(reader, writer, "scripted")  # type: ignore[arg-type]
        try:
            answers = await conn.exchange(b"", replies, 1.0, marked=False)
        except (resp.ConnectionFailed, resp.Timeout):
            assert writer.closed
        else:
            assert len(answers) == replies

    asyncio.run(run())


@pytest.mark.parametrize("url", ["memory://?foo=bar", "memory://a/b", "memory://" + "x" * 65])
def test_a_memory_store_name_takes_no_query(url: str) -> None:
    from controller.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"redis\.url: memory://NAME"):
        load_settings(ROOT / "controller" / "data" / "sim-cabinet.toml", env={},
                      overrides={"redis.url": url})
