"""The store's Redis client: the commands the store sends, over RESP2, on asyncio streams.

A client of the daemon's own instead of redis-py (decision 0024): redis-py brings every
command of every Redis module, its parsers and ``importlib.metadata`` into the process,
about 7 MB of a cabinet's memory for the 30 commands the store sends. This module is the
subset the store uses, with the same call shapes as ``redis.asyncio.Redis`` created with
``decode_responses=True`` (so the in-process fakeredis of ``memory://`` and a redis-py
client can still stand in for it):

- :class:`Client`: one command per call, each on a connection of its pool;
- :meth:`Client.pipeline`: ``transaction=True`` is WATCH (immediate mode: each command
  answers at once), then :meth:`Pipeline.multi` and queued commands sent as one
  MULTI/EXEC on the same connection; ``transaction=False`` sends its queued commands in one
  write and reads their replies.

Failure rules (the store's, decision 0004): no command is ever sent twice by this module
(the store decides what may be repeated); every answer is awaited at most
``socket_timeout`` seconds, a connection at most ``connect_timeout`` seconds (the
handshake included); a connection whose exchange failed in any way (timeout, reset,
cancelled mid-reply, a reply that is not RESP) is closed, never pooled again, so a late
answer can never be read as the answer to the next command; every exchange ends with
is framed by ``PING <n>`` and ``PING <n+1>``, whose echoes must come back first and last,
so an answer (or part of one) added on the way (a duplicate, a stray reply: RESP2 has no
request id) is found out by the exchange it disturbs, whose answers are then not returned,
and the connection is closed.
An idle pooled connection that the server closed (Redis restarted) is dropped when it is
next taken.

Errors: :class:`ConnectionFailed` (refused, reset, closed, authentication refused, Redis
still loading its data), :class:`Timeout`, :class:`ReplyError` (Redis answered with an
error: ``OOM``, ``MISCONF``, ``WRONGTYPE``, ``NOPERM``...), :class:`WatchConflict` (a
watched key changed, EXEC did nothing), :class:`ProtocolError` (the bytes are not RESP2),
all :class:`RespError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "COMMANDS",
    "Client",
    "ConnectionFailed",
    "Pipeline",
    "ProtocolError",
    "ReplyError",
    "RespError",
    "Timeout",
    "WatchConflict",
]

#: Every command this module can send (the connection's handshake included). The shipped
#: ACL of the store's Redis user (``deploy/redis-locker.acl``) must allow each of them.
COMMANDS = frozenset({
    "AUTH", "SELECT", "CLIENT|SETNAME", "PING", "WATCH", "UNWATCH", "MULTI", "EXEC",
    "TIME", "TYPE", "GET", "SET", "DEL", "MGET", "PEXPIRE", "HGET", "HSET", "HSETNX", "HDEL",
    "HGETALL", "HKEYS", "HMGET", "LPUSH", "LRANGE", "LTRIM", "XADD", "XLEN", "XRANGE",
    "XREVRANGE", "XTRIM", "ZADD", "ZCARD", "ZRANGE", "ZRANGEBYSCORE", "ZREM",
})

# A bulk string or an array longer than this is not something the store ever wrote: a
# reply announcing one is treated as a broken stream, not allocated (Redis's own cap on a
# string is 512 MB).
_MAX_BULK = 512 * 1024 * 1024
_MAX_ITEMS = 1 << 24
_MAX_DEPTH = 8


class RespError(Exception):
    """Any failure of the client."""


class ConnectionFailed(RespError):
    """No connection, or it broke: refused, reset, closed by the server, the handshake
    refused (wrong password), Redis still loading its data set."""


class Timeout(RespError):
    """No answer within the socket timeout (or no connection within the connect timeout).
    The connection was closed: the command may or may not have been applied."""


class ProtocolError(ConnectionFailed):
    """The server's bytes are not RESP2; the connection was closed."""


class ReplyError(RespError):
    """Redis answered with an error. ``code`` is its first word (``OOM``, ``MISCONF``,
    ``WRONGTYPE``, ``NOPERM``, ``ERR``...)."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


class WatchConflict(RespError):
    """A watched key changed before EXEC: the transaction did nothing."""


_Convert = Callable[[Any], Any]


def _ok(value: Any) -> bool:
    return bool(value == "OK")


def _as_bool(value: Any) -> bool:
    return bool(value)


def _pairs(value: Any) -> dict[str, Any]:
    items = list(value or [])
    return dict(zip(items[::2], items[1::2], strict=True))


def _time(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def _stream(value: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(entry_id, _pairs(fields)) for entry_id, fields in value or []]


def _set_ok(value: Any) -> bool | None:
    return True if value == "OK" else None


def _encode(args: Iterable[Any]) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    parts: list[bytes] = []
    count = 0
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("a bool is not a Redis value: pass a string or a number")
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"a {type(arg).__name__} is not a Redis value")
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        count += 1
    return b"*%d\r\n" % count + b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Where and how to connect, from the URL."""

    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    server_hostname: str | None

    @property
    def where(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


_TLS_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def parse_url(url: str, password: str | None = None) -> _Endpoint:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS: query items
    ``ssl_cert_reqs`` none/optional/required, ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_check_hostname``), ``unix://[[user]:password@]/path``; query items
    ``db``, ``username``, ``password``. ``password`` (from a password file) wins over the
    URL's. Raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    if parts.fragment or url.endswith("#"):
        raise ValueError("a Redis URL has no #fragment")
    if scheme != "unix" and parts.netloc.endswith(":"):
        raise ValueError("bad port: empty (leave out the ':' for 6379)")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not key:
            raise ValueError("a query item without a name")
        if key in query:
            raise ValueError(f"query item {key!r} given twice")
        if not value:
            raise ValueError(f"query item {key!r} is empty")
        query[key] = value
    tls_keys = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname"}
    allowed = {"db", "username", "password"} | (tls_keys if scheme == "rediss" else set())
    unknown = sorted(set(query) - allowed)
    if unknown:
        # password_file is read (and taken out) before this parser sees the URL.
        raise ValueError(f"unknown query item(s) {', '.join(unknown)}: "
                         f"known are {', '.join(sorted(allowed | {'password_file'}))}")
    username = query.get("username") or (unquote(parts.username) if parts.username else None)
    url_password = query.get("password") or (unquote(parts.password)
                                             if parts.password else None)
    db_text = query.get("db")
    path = parts.path
    if scheme != "unix" and path not in ("", "/"):
        if db_text is not None:
            raise ValueError("the database is given twice (path and db=)")
        db_text = path.lstrip("/")
    db = 0
    if db_text not in (None, ""):
        if not (db_text.isascii() and db_text.isdigit()) or len(db_text) > 5:
            raise ValueError(f"the database must be a whole number, got {db_text!r}")
        db = int(db_text)
    if scheme == "unix":
        if not path:
            raise ValueError("a unix:// URL needs the socket's path")
        return _Endpoint(None, 0, path, db, username, password or url_password, None, None)
    try:
        port = 6379 if parts.port is None else parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"bad port: {port} (1 to 65535)")
    host = parts.hostname or "localhost"
    context = None
    if scheme == "rediss":
        reqs = query.get("ssl_cert_reqs", "required").lower()
        if reqs not in _TLS_REQS:
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, got {reqs!r}")
        check = query.get("ssl_check_hostname", "true" if reqs != "none" else "false").lower()
        if check not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"ssl_check_hostname must be true or false, got {check!r}")
        check_hostname = check in ("true", "1", "yes")
        if check_hostname and reqs == "none":
            raise ValueError("ssl_check_hostname=true needs the server's certificate checked: "
                             "ssl_cert_reqs=required (the default) or optional")
        if "ssl_keyfile" in query and "ssl_certfile" not in query:
            raise ValueError("ssl_keyfile without ssl_certfile")
        try:
            context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ssl_ca_certs {query['ssl_ca_certs']!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        context.check_hostname = check_hostname
        context.verify_mode = _TLS_REQS[reqs]
        if "ssl_certfile" in query:
            try:
                context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"ssl_certfile {query['ssl_certfile']!r}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    return _Endpoint(host, port, None, db, username, password or url_password, context,
                     host if context is not None else None)


class _Connection:
    """One socket to Redis. Not shared: a caller holds it for a whole exchange."""

    __slots__ = ("_exchanges", "_reader", "_writer", "broken", "where")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 where: str) -> None:
        self._reader = reader
        self._writer = writer
        self.where = where
        self.broken = False
        self._exchanges = 0

    def usable(self) -> bool:
        """Still worth using: not broken, not closed by the server while it was idle."""
        return not (self.broken or self._writer.is_closing() or self._reader.at_eof())

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self._writer.close()

    async def exchange(self, payload: bytes, replies: int, wait_s: float, *,
                       marked: bool = True) -> list[Any]:
        """Send ``payload`` (``replies`` commands) and read their replies, an error reply
        being returned as a :class:`ReplyError` value. Any failure closes the connection.

        ``marked``: the commands are framed by ``PING <n>`` before and ``PING <n+1>``
        after (``n`` counting this connection's marks), whose echoes must come back first
        and last. RESP2 has no request id: without the marks, a reply added on the way (a
        duplicate, a stray answer, part of one) would be read as the next command's answer,
        and every answer after it would be one off. With them, bytes left over from before
        spoil the first echo and a whole reply added shifts the last, so such a connection
        is found out by the exchange it disturbs and closed (:class:`ProtocolError`), and
        none of that exchange's answers is returned."""
        if marked:
            first, last = str(self._exchanges + 1), str(self._exchanges + 2)
            self._exchanges += 2
            payload = _encode(("PING", first)) + payload + _encode(("PING", last))
            replies += 2
        try:
            async with asyncio.timeout(wait_s):
                self._writer.write(payload)
                await self._writer.drain()
                out = [await self._read(0) for _ in range(replies)]
            if marked:
                lead, end = out[0], out[-1]
                if lead != first or end != last:
                    raise ProtocolError(
                        f"the answers are out of step with the commands (the exchange's marks "
                        f"{first!r} and {last!r} came back as {lead!r:.40} and {end!r:.40}): "
                        "an answer was added, cut or lost on the way")
                out = out[1:-1]
        except TimeoutError as exc:
            self.close()
            raise Timeout(f"Timeout reading from {self.where}") from exc
        except asyncio.IncompleteReadError as exc:
            self.close()
            raise ConnectionFailed(f"Connection closed by server ({self.where})") from exc
        except asyncio.LimitOverrunError as exc:
            self.close()
            raise ProtocolError(f"a reply line too long from {self.where}") from exc
        except ProtocolError as exc:
            self.close()
            raise ProtocolError(f"{exc} (from {self.where})") from exc
        except OSError as exc:
            self.close()
            raise ConnectionFailed(
                f"Error {exc.errno or ''} while talking to {self.where}: "
                f"{exc.strerror or exc}".replace("Error  ", "Error ")) from exc
        except BaseException:
            self.close()  # cancelled mid-exchange: the stream's state is unknown
            raise
        return out

    async def _read(self, depth: int) -> Any:
        line = await self._reader.readuntil(b"\r\n")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b":":
            return _integer(rest)
        if kind == b"$":
            size = _integer(rest)
            if size == -1:
                return None
            if not 0 <= size <= _MAX_BULK:
                raise ProtocolError(f"a bulk string of {size} bytes")
            data = await self._reader.readexactly(size + 2)
            if data[-2:] != b"\r\n":
                raise ProtocolError("a bulk string not ended by CRLF")
            try:
                return data[:-2].decode()
            except UnicodeDecodeError:
                # The store writes only UTF-8 text.
                raise ProtocolError("a reply that is not UTF-8 text") from None
        if kind == b"*":
            count = _integer(rest)
            if count == -1:
                return None
            if not 0 <= count <= _MAX_ITEMS or depth >= _MAX_DEPTH:
                raise ProtocolError(f"an array of {count} items at depth {depth}")
            return [await self._read(depth + 1) for _ in range(count)]
        if kind == b"-":
            return ReplyError(rest.decode("utf-8", "replace"))
        raise ProtocolError(f"not a RESP2 reply: {line[:40]!r}")


def _integer(text: bytes) -> int:
    if not text or len(text) > 20 or not (text.lstrip(b"-").isdigit() and text.isascii()):
        raise ProtocolError(f"not an integer: {text[:24]!r}")
    return int(text)


class ConnectionPool:
    """Idle connections of a :class:`Client`, newest first."""

    def __init__(self, endpoint: _Endpoint, *, socket_timeout: float,
                 connect_timeout: float, client_name: str | None) -> None:
        self._endpoint = endpoint
        self.socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._client_name = client_name
        self._idle: list[_Connection] = []
        self._generation = 0
        self.closed = False

    async def take(self) -> _Connection:
        if self.closed:
            raise ConnectionFailed("the client is closed")
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return await self._connect()

    def give_back(self, conn: _Connection) -> None:
        if self.closed or not conn.usable() or len(self._idle) >= 64:
            conn.close()
        else:
            self._idle.append(conn)

    async def disconnect(self, inuse_connections: bool = False) -> None:
        """Close the idle connections (those in use are closed when given back if they
        broke; ``inuse_connections`` is accepted for redis-py's signature)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _connect(self) -> _Connection:
        ep = self._endpoint
        where = ep.where
        try:
            async with asyncio.timeout(self._connect_timeout):
                if ep.path is not None:
                    reader, writer = await asyncio.open_unix_connection(ep.path)
                else:
                    reader, writer = await asyncio.open_connection(
                        ep.host, ep.port, ssl=ep.tls, server_hostname=ep.server_hostname)
        except TimeoutError as exc:
            raise Timeout(f"Timeout connecting to {where}") from exc
        except (OSError, ssl.SSLError) as exc:
            errno = getattr(exc, "errno", None)
            reason = (os.strerror(errno) if isinstance(errno, int) and errno > 0
                      else str(exc) or type(exc).__name__)
            raise ConnectionFailed(
                f"Error {errno} connecting to {where}. {reason}." if errno
                else f"Error connecting to {where}: {reason}") from exc
        conn = _Connection(reader, writer, where)
        hello: list[tuple[Any, ...]] = []
        if ep.password is not None:
            hello.append(("AUTH", ep.username, ep.password) if ep.username
                         else ("AUTH", ep.password))
        if ep.db:
            hello.append(("SELECT", ep.db))
        if self._client_name:
            hello.append(("CLIENT", "SETNAME", self._client_name))
        if hello:
            # Not marked: a refused AUTH makes every later command refused too. An answer
            # added to these is found out by the connection's first marked exchange.
            replies = await conn.exchange(b"".join(_encode(c) for c in hello), len(hello),
                                          self._connect_timeout, marked=False)
            for command, reply in zip(hello, replies, strict=True):
                if isinstance(reply, ReplyError):
                    conn.close()
                    raise ConnectionFailed(f"{command[0]} refused by {where}: {reply}") \
                        from reply
        return conn

    async def aclose(self) -> None:
        self.closed = True
        await self.disconnect()


class _Commands:
    """The command methods, shared by :class:`Client` (each runs at once) and
    :class:`Pipeline` (immediate or queued): each calls :meth:`_run` with the command's
    arguments and the conversion of its reply."""

    def _run(self, args: tuple[Any, ...], convert: _Convert | None = None) -> Any:
        raise NotImplementedError

    def ping(self) -> Any:
        return self._run(("PING",), lambda v: v == "PONG")

    def time(self) -> Any:
        return self._run(("TIME",), _time)

    def type(self, key: str) -> Any:
        return self._run(("TYPE", key))

    def get(self, key: str) -> Any:
        return self._run(("GET", key))

    def set(self, key: str, value: Any, *, px: int | None = None) -> Any:
        args: tuple[Any, ...] = ("SET", key, value)
        if px is not None:
            args += ("PX", px)
        return self._run(args, _set_ok)

    def delete(self, *keys: str) -> Any:
        return self._run(("DEL", *keys))

    def mget(self, keys: Iterable[str]) -> Any:
        return self._run(("MGET", *keys))

    def pexpire(self, key: str, ms: int) -> Any:
        return self._run(("PEXPIRE", key, ms), _as_bool)

    def hget(self, key: str, field: str) -> Any:
        return self._run(("HGET", key, field))

    def hset(self, key: str, field: str | None = None, value: Any = None, *,
             mapping: Mapping[str, Any] | None = None) -> Any:
        args: list[Any] = ["HSET", key]
        if field is not None:
            args += (field, value)
        for item in (mapping or {}).items():
            args += item
        if len(args) == 2:
            raise ValueError("hset needs a field and value or a mapping")
        return self._run(tuple(args))

    def hsetnx(self, key: str, field: str, value: Any) -> Any:
        return self._run(("HSETNX", key, field, value), _as_bool)

    def hdel(self, key: str, *fields: str) -> Any:
        return self._run(("HDEL", key, *fields))

    def hgetall(self, key: str) -> Any:
        return self._run(("HGETALL", key), _pairs)

    def hkeys(self, key: str) -> Any:
        return self._run(("HKEYS", key))

    def hmget(self, key: str, fields: Iterable[str]) -> Any:
        return self._run(("HMGET", key, *fields))

    def lpush(self, key: str, *values: Any) -> Any:
        return self._run(("LPUSH", key, *values))

    def lrange(self, key: str, start: int, end: int) -> Any:
        return self._run(("LRANGE", key, start, end))

    def ltrim(self, key: str, start: int, end: int) -> Any:
        return self._run(("LTRIM", key, start, end), _ok)

    def xadd(self, key: str, fields: Mapping[str, Any], id: str = "*", *,
             maxlen: int | None = None, approximate: bool = True) -> Any:
        args: list[Any] = ["XADD", key]
        if maxlen is not None:
            args += ("MAXLEN", "~" if approximate else "=", maxlen)
        args.append(id)
        for item in fields.items():
            args += item
        return self._run(tuple(args))

    def xtrim(self, key: str, *, maxlen: int | None = None, minid: str | None = None,
              approximate: bool = True) -> Any:
        if (maxlen is None) == (minid is None):
            raise ValueError("xtrim needs exactly one of maxlen and minid")
        how = ("MAXLEN", maxlen) if maxlen is not None else ("MINID", minid)
        return self._run(("XTRIM", key, how[0], "~" if approximate else "=", how[1]))

    def xlen(self, key: str) -> Any:
        return self._run(("XLEN", key))

    def xrange(self, key: str, min: str = "-", max: str = "+",
               count: int | None = None) -> Any:
        args: tuple[Any, ...] = ("XRANGE", key, min, max)
        return self._run(args + (("COUNT", count) if count is not None else ()), _stream)

    def xrevrange(self, key: str, max: str = "+", min: str = "-",
                  count: int | None = None) -> Any:
        args: tuple[Any, ...] = ("XREVRANGE", key, max, min)
        return self._run(args + (("COUNT", count) if count is not None else ()), _stream)

    def zadd(self, key: str, mapping: Mapping[str, float]) -> Any:
        args: list[Any] = ["ZADD", key]
        for member, score in mapping.items():
            args += (score, member)
        return self._run(tuple(args))

    def zcard(self, key: str) -> Any:
        return self._run(("ZCARD", key))

    def zrange(self, key: str, start: int, end: int) -> Any:
        return self._run(("ZRANGE", key, start, end))

    def zrangebyscore(self, key: str, min: Any, max: Any,
                      start: int | None = None, num: int | None = None) -> Any:
        args: tuple[Any, ...] = ("ZRANGEBYSCORE", key, min, max)
        if (start is None) != (num is None):
            raise ValueError("zrangebyscore needs both start and num, or neither")
        return self._run(args + (("LIMIT", start, num) if start is not None else ()))

    def zrem(self, key: str, *members: str) -> Any:
        return self._run(("ZREM", key, *members))


def _command_name(args: tuple[Any, ...]) -> str:
    name = str(args[0])
    return f"{name}|{str(args[1]).upper()}" if name == "CLIENT" else name


# Error replies that say Redis cannot serve this connection now, not that it refused the
# command: the same as a connection that failed (redis-py's BusyLoadingError and
# AuthenticationError are ConnectionErrors too).
_UNAVAILABLE = frozenset({"LOADING", "NOAUTH", "WRONGPASS", "MASTERDOWN"})


def _failure(reply: ReplyError, prefix: str = "") -> RespError:
    if reply.code in _UNAVAILABLE:
        return ConnectionFailed(f"{prefix}{reply}")
    return ReplyError(f"{prefix}{reply}")


def _raise_for(reply: Any) -> Any:
    if isinstance(reply, ReplyError):
        raise _failure(reply)
    return reply


class Client(_Commands):
    """A pool of connections to one Redis; see the module's docstring."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.connection_pool = pool

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None,
                 socket_timeout: float = 5.0, socket_connect_timeout: float = 5.0,
                 client_name: str | None = None) -> Client:
        """A client for ``url`` (see :func:`parse_url`); nothing is connected yet.
        Raises ValueError for a bad URL."""
        endpoint = parse_url(url, password)
        return cls(ConnectionPool(endpoint, socket_timeout=socket_timeout,
                                  connect_timeout=socket_connect_timeout,
                                  client_name=client_name))

    async def _call(self, args: tuple[Any, ...], convert: _Convert | None) -> Any:
        pool = self.connection_pool
        conn = await pool.take()
        try:
            (reply,) = await conn.exchange(_encode(args), 1, pool.socket_timeout)
        finally:
            pool.give_back(conn)
        reply = _raise_for(reply)
        return convert(reply) if convert is not None else reply

    def _run(self, args: tuple[Any, ...], convert: _Convert | None = None) -> Any:
        return self._call(args, convert)

    def pipeline(self, transaction: bool = True) -> Pipeline:
        return Pipeline(self.connection_pool, transaction)

    async def aclose(self) -> None:
        await self.connection_pool.aclose()


class Pipeline(_Commands):
    """A batch of commands on one connection; see the module's docstring. Use with
    ``async with``: leaving it gives the connection back (after UNWATCH when it watched
    and did not EXEC)."""

    def __init__(self, pool: ConnectionPool, transaction: bool) -> None:
        self._pool = pool
        self._transaction = transaction
        self._conn: _Connection | None = None
        self._watching = False
        self._queued = False  # multi() called (or a plain batch)
        self._commands: list[tuple[tuple[Any, ...], _Convert | None]] = []
        if not transaction:
            self._queued = True

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.reset()

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        self._commands = []
        self._queued = not self._transaction
        watching, self._watching = self._watching, False
        if conn is None:
            return
        if watching and conn.usable():
            try:
                (reply,) = await conn.exchange(_encode(("UNWATCH",)), 1,
                                               self._pool.socket_timeout)
            except RespError:
                conn.close()
            else:
                if isinstance(reply, ReplyError):
                    conn.close()
        self._pool.give_back(conn)

    async def _connection(self) -> _Connection:
        if self._conn is None:
            self._conn = await self._pool.take()
        return self._conn

    async def watch(self, *keys: str) -> bool:
        if self._queued:
            raise RespError("watch() after multi()")
        conn = await self._connection()
        (reply,) = await conn.exchange(_encode(("WATCH", *keys)), 1, self._pool.socket_timeout)
        _raise_for(reply)
        self._watching = True
        return True

    def multi(self) -> None:
        if self._queued:
            raise RespError("multi() called twice")
        self._queued = True

    def _run(self, args: tuple[Any, ...], convert: _Convert | None = None) -> Any:
        if self._queued:
            self._commands.append((args, convert))
            return self
        if not self._watching:
            raise RespError("a transaction's commands are queued after multi(); "
                            "before it, only after watch()")
        return self._immediate(args, convert)

    async def _immediate(self, args: tuple[Any, ...], convert: _Convert | None) -> Any:
        conn = await self._connection()
        (reply,) = await conn.exchange(_encode(args), 1, self._pool.socket_timeout)
        reply = _raise_for(reply)
        return convert(reply) if convert is not None else reply

    async def execute(self) -> list[Any]:
        """Send what was queued; their converted replies, in order. Raises the first error
        reply (a transaction whose command Redis refused at queueing is discarded
        whole), WatchConflict when EXEC did nothing."""
        commands = self._commands
        if not commands and not self._watching:
            return []
        try:
            conn = await self._connection()
            payload = b"".join(_encode(args) for args, _ in commands)
            timeout = self._pool.socket_timeout
            if not self._transaction:
                replies = await conn.exchange(payload, len(commands), timeout)
            else:
                payload = _encode(("MULTI",)) + payload + _encode(("EXEC",))
                # The watch ends with EXEC whatever its outcome.
                replies = await conn.exchange(payload, len(commands) + 2, timeout)
                self._watching = False
                queued, result = replies[:-1], replies[-1]
                for index, reply in enumerate(queued):
                    if isinstance(reply, ReplyError):
                        name = "MULTI" if index == 0 else _command_name(commands[index - 1][0])
                        raise _failure(reply, f"Command # {index} ({name}) of pipeline "
                                              "caused error: ")
                if isinstance(result, ReplyError):
                    raise _failure(result)
                if result is None:
                    raise WatchConflict("a watched key changed: the transaction did nothing")
                if len(result) != len(commands):
                    conn.close()
                    raise ProtocolError(f"EXEC answered {len(result)} replies for "
                                        f"{len(commands)} commands")
                replies = result
            out: list[Any] = []
            for index, ((args, convert), reply) in enumerate(zip(commands, replies,
                                                                 strict=True)):
                if isinstance(reply, ReplyError):
                    raise _failure(reply, f"Command # {index + 1} ({_command_name(args)}) "
                                          "of pipeline caused error: ")
                out.append(convert(reply) if convert is not None else reply)
            return out
        finally:
            await self.reset()
