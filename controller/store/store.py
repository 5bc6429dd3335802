"""The durable local store: the only module that talks to Redis.

One :class:`Store` per process and cabinet. It holds what must survive a crash of the
daemon or of Redis (production Redis runs with ``appendonly yes`` and ``appendfsync
always``, see ``deploy/redis.conf`` and ``docs/decisions/0004-redis-durability.md``):

- the **outbox**: events committed before they are published and removed only after the
  broker acknowledged them, each with a unique id and a gap-free sequence number;
- **command records**: the idempotency key of every command, its first reply, and the
  pulse intents written before a door is pulsed;
- compartment and order state (opaque JSON from the domain), pickup-code verifiers
  (keyed: never a code, nothing to test a guess against without the cabinet's code key),
  their index and used marks, wrong-code lockouts, the boot counter, and the audit log.

Atomicity without Lua
---------------------
Every multi-key write is one ``MULTI``/``EXEC`` transaction, guarded by ``WATCH`` on the
keys it read (optimistic locking, retried a bounded number of times with jittered
back-off). Redis applies a transaction all or nothing, writes it to the append-only file
as one unit and, on loading a file cut short by a crash, drops an unterminated
transaction. So "increment the sequence number" and "store the event under that number"
can never be separated by a crash of either process. Lua would do the same in one round
trip, but the in-process fakeredis used by the tests, the simulator and the demo runs no
Lua without an extra native library; one code path, exercised by the unit tests on
fakeredis and by the integration tests on a real redis-server, was preferred.

Key layout (all under ``{prefix}:{cabinet}:``)
----------------------------------------------
====================  =======  ====================================================
``outbox:seq``        string   last sequence number handed out (never decreases)
``outbox:pending``    zset     event id -> seq, the events not yet acknowledged
``outbox:event:{id}`` string   the event JSON (one key each, so ack watches only it)
``outbox:delivered``  stream   acknowledged events, trimmed by count and age
``cmd:{id}``          hash     a command record, expires after the retention
``commands:open``     zset     ids of commands begun and not finished
``compartments``      hash     compartment id -> state JSON
``doors``             hash     compartment id -> the door as last reported (JSON),
                               written only with the events that report it
``orders``            hash     order id -> order JSON
``codes``             hash     order id -> its code records JSON (id, purpose, verifier)
``code-index``        hash     verifier -> {order_id, code_id, purpose} JSON
``codes-used:{order}`` hash    code id -> time it was used
``lockout:{subject}`` string   wrong-code lockout JSON, with a TTL
``boot:counter``      string   number of boots so far
``boot:current``      string   the current boot JSON
``boot:history``      list     the last boots, newest first
``audit``             stream   who/what/when, trimmed by count
====================  =======  ====================================================

Connection loss
---------------
The store's client (:mod:`controller.store.resp`) never retries (a blind retry of a write
could apply it twice),
and every socket operation is bounded by ``StoreOptions.socket_timeout_s`` and
``connect_timeout_s``. While Redis is down each operation fails promptly with
:class:`~controller.store.errors.StoreUnavailable`; the connection pool drops dead
connection that broke (Redis restarted since it was pooled) is replaced: an operation
whose repetition is harmless (a read, a plain overwrite, a watched transaction that failed
before EXEC was sent) is tried once more on a fresh connection; any other write reports
StoreUnavailable and its outcome is the caller's to judge. So the first operation after
Redis is back simply works. The caller decides when to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from controller.store import resp
from controller.store.access import check_store_access, resolve_password_file
from controller.store.errors import (
    StoreClosed,
    StoreConfigError,
    StoreConflict,
    StoreDataError,
    StoreError,
    StoreFull,
    StoreRejected,
    StoreTimeout,
    StoreUnavailable,
    UnknownCommand,
)
from controller.store.records import (
    AlreadySeen,
    AuditEntry,
    Boot,
    CommandRecord,
    CommandReply,
    Delivered,
    Event,
    NewCommand,
    NewEvent,
    ReplyTarget,
    Timestamp,
    check_id,
    to_iso,
)

__all__ = ["Store", "StoreOptions"]

T = TypeVar("T")

_KEY_PART = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PREFIX = re.compile(r"(?=.{1,128}$)[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*:?")
_SCHEMES = ("redis://", "rediss://", "unix://")
_MEMORY = "memory://"

# Named in-process servers for "memory://NAME": two Stores of one process opened on the
# same name see the same data, as two connections to one redis-server would.
_memory_servers: dict[str, Any] = {}


class _Errors:
    """The exception classes of the clients in use, as tuples for ``except``: the store's
    own client (:mod:`controller.store.resp`) always; redis-py's once a redis-py-shaped
    client is wrapped (fakeredis for ``memory://``, or a client a caller built), imported
    only then so that the daemon on a real Redis never loads redis-py."""

    timeout: tuple[type[BaseException], ...] = (resp.Timeout,)
    connection: tuple[type[BaseException], ...] = (resp.ConnectionFailed,)
    reply: tuple[type[BaseException], ...] = (resp.ReplyError,)
    watch: tuple[type[BaseException], ...] = (resp.WatchConflict,)
    any: tuple[type[BaseException], ...] = (resp.RespError,)
    out_of_memory: tuple[type[BaseException], ...] = ()
    redis_py = False

    @classmethod
    def add_redis_py(cls) -> None:
        if cls.redis_py:
            return
        from redis import exceptions as redis_errors

        cls.timeout += (redis_errors.TimeoutError,)
        cls.connection += (redis_errors.ConnectionError,)
        cls.reply += (redis_errors.ResponseError,)
        cls.watch += (redis_errors.WatchError,)
        cls.any += (redis_errors.RedisError,)
        cls.out_of_memory += (redis_errors.OutOfMemoryError,)
        cls.redis_py = True


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Tunables of a :class:`Store`; the defaults are the production ones.

    - ``socket_timeout_s``: longest wait for one answer. An fsync on a worn SD card can
      stall for a second or two; longer than this is treated as Redis being unavailable.
    - ``connect_timeout_s``: longest wait to establish a connection.
    - ``command_retention_s``: how long a command record is kept (must outlive every
      command's lifetime by far, so a late repeat still finds it).
    - ``delivered_max_entries`` / ``delivered_max_age_s``: bounds of the delivered log
      (``None`` age = count only). Age is measured on the Redis server's clock, the one
      its stream ids come from, not on the store's ``clock``.
    - ``audit_max_entries``: bound of the audit stream.
    - ``boot_history``: number of past boots kept.
    - ``max_transaction_attempts``: optimistic transactions retried at most this often
      when another writer changed a watched key.
    - ``commit_mark_retention_s``: how long the mark of a commit of caller-chosen event
      ids is kept: a retry of that commit within this time, after its outcome was lost,
      finds it and commits nothing twice (see :meth:`Store.commit`).
    """

    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    command_retention_s: float = 24 * 3600.0
    delivered_max_entries: int = 10_000
    delivered_max_age_s: float | None = 7 * 24 * 3600.0
    audit_max_entries: int = 10_000
    boot_history: int = 50
    max_transaction_attempts: int = 64
    commit_mark_retention_s: float = 24 * 3600.0

    def validate(self) -> None:
        for name in ("socket_timeout_s", "connect_timeout_s", "command_retention_s",
                     "commit_mark_retention_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise StoreConfigError(f"StoreOptions.{name} must be > 0, got {value!r}")
        age = self.delivered_max_age_s
        if age is not None and not (math.isfinite(age) and age > 0):
            raise StoreConfigError(f"StoreOptions.delivered_max_age_s must be > 0, got {age!r}")
        for name in (
            "delivered_max_entries", "audit_max_entries", "boot_history",
            "max_transaction_attempts",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise StoreConfigError(f"StoreOptions.{name} must be an int >= 1, got {value!r}")


class _Keys:
    def __init__(self, prefix: str, cabinet: str) -> None:
        base = f"{prefix}:{cabinet}"
        self.base = base
        self.seq = f"{base}:outbox:seq"
        self.pending = f"{base}:outbox:pending"
        self.delivered = f"{base}:outbox:delivered"
        self.commands_open = f"{base}:commands:open"
        self.compartments = f"{base}:compartments"
        self.doors = f"{base}:doors"
        self.orders = f"{base}:orders"
        self.codes = f"{base}:codes"
        self.code_index = f"{base}:code-index"
        self.boot_counter = f"{base}:boot:counter"
        self.boot_current = f"{base}:boot:current"
        self.boot_history = f"{base}:boot:history"
        self.audit = f"{base}:audit"
        self.config = f"{base}:config"
        self.probe = f"{base}:probe"

    def event(self, event_id: str) -> str:
        return f"{self.base}:outbox:event:{event_id}"

    def commit_mark(self, first_event_id: str) -> str:
        return f"{self.base}:outbox:commit:{first_event_id}"

    def command(self, command_id: str) -> str:
        return f"{self.base}:cmd:{command_id}"

    def codes_used(self, order_id: str) -> str:
        return f"{self.base}:codes-used:{order_id}"

    def lockout(self, subject: str) -> str:
        return f"{self.base}:lockout:{subject}"


@dataclass(slots=True)
class _Done(Generic[T]):
    """A transaction plan that needs no write: the answer is known from the reads."""

    value: T


@dataclass(slots=True)
class _Write(Generic[T]):
    """A transaction plan that queued its writes; ``result`` maps EXEC's results."""

    result: Callable[[list[Any]], T]


_Plan = _Done[T] | _Write[T]


@dataclass(frozen=True, slots=True)
class _Finish:
    """A command's reply, checked and serialised, and the writes that store it: one
    definition for :meth:`Store.finish_command` and :meth:`Store.commit_with_reply`."""

    command_id: str
    key: str
    open_index: str
    reply: dict[str, Any]
    raw: str
    finished_at: str
    gone: tuple[str, ...]

    def stored(self, record: Sequence[Any], op: str) -> dict[str, Any] | None:
        """The reply already on record (``record`` is the HMGET of state and reply)."""
        state, first = (v.decode() if isinstance(v, bytes) else v for v in record)
        if state == "done" and first is not None:
            stored = _loads(first, "reply", op)
            return stored if isinstance(stored, dict) else {"value": stored}
        return None

    def queue(self, pipe: Pipeline, record: Sequence[Any], op: str) -> dict[str, Any] | None:
        """Queue the writes that finish the command (inside MULTI) and return the reply
        on record after them; nothing is queued if the record is gone (``None``) or
        already finished (its first reply)."""
        if record[0] is None:
            return None
        stored = self.stored(record, op)
        if stored is not None:
            return stored
        if self.gone:
            pipe.hdel(self.key, *self.gone)
        pipe.hset(self.key, mapping={"state": "done", "reply": self.raw,
                                     "finished_at": self.finished_at})
        pipe.zrem(self.open_index, self.command_id)
        return self.reply

# A pipeline's command answers at once in immediate (WATCH) mode and queues after multi();
# redis-py's types cannot say both. The pipelines are handled as Any inside this module.
Pipeline = Any


def _dumps(value: Any, what: str, op: str) -> str:
    try:
        return json.dumps(
            value, separators=(",", ":"), sort_keys=True, allow_nan=False, ensure_ascii=False
        )
    except (TypeError, ValueError) as exc:
        raise StoreDataError(f"{what} is not JSON-serialisable: {exc}", op=op) from exc


def _loads(text: str, what: str, op: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreDataError(f"stored {what} is not valid JSON: {text!r:.120}", op=op) from exc


def _json_object(value: Any, what: str, op: str) -> dict[str, Any]:
    """A JSON round-trip copy of a dict: what is returned equals what a reload returns."""
    if not isinstance(value, Mapping):
        raise StoreDataError(f"{what} must be a dict, got {type(value).__name__}", op=op)
    copy = _loads(_dumps(value, what, op), what, op)
    assert isinstance(copy, dict)
    return copy


def _check_limit(limit: object, op: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise StoreDataError(f"limit must be an int >= 1, got {limit!r}", op=op)
    return limit


def _check_seq(seq: object, op: str) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise StoreDataError(f"a sequence number must be an int >= 0, got {seq!r}", op=op)
    return seq


def _lost_connection(exc: BaseException) -> BaseException | None:
    """The connection error behind ``exc``, or None when ``exc`` is a real conflict.

    redis-py (the client under ``memory://``) turns a connection that dies while a pipeline
    WATCHes keys into a ``WatchError`` ("A ConnectionError occurred while watching...")
    raised while handling the socket error, the same class as "a watched key changed". The
    two mean opposite things here: a conflict is retried, a dead connection is Redis going
    away (and after EXEC, a write whose outcome is unknown).
    """
    lost = (*_Errors.connection, *_Errors.timeout, OSError, TimeoutError)
    if isinstance(exc, lost):
        return exc
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):  # a short chain; bounded all the same
        if cause is None:
            return None
        if isinstance(cause, lost):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


class Store:
    """The cabinet's durable store. Open with :meth:`connect`, close with :meth:`close`
    (or ``async with``).

    Every method is a coroutine that either completes or raises a
    :class:`~controller.store.errors.StoreError`; see the error tree in
    :mod:`controller.store.errors` for what each means, and in particular what
    ``StoreUnavailable`` from a write means. Methods may be called concurrently from tasks
    of one event loop; several processes may share one Redis (the daemon and
    ``lockerctl``): every read-modify-write is a watched transaction.
    """

    def __init__(
        self,
        client: Any,
        key_prefix: str,
        cabinet_id: str,
        *,
        boot_id: str | None = None,
        options: StoreOptions | None = None,
        clock: Callable[[], float] = time.time,
        uptime_ms: Callable[[], int] | None = None,
    ) -> None:
        """Wrap an already built client: the store's own (:class:`resp.Client`), or a
        ``redis.asyncio.Redis``-shaped one (fakeredis) with ``decode_responses=True``.

        Prefer :meth:`connect`. The Store owns the client from now on and closes it in
        :meth:`close`.
        """
        if not isinstance(key_prefix, str) or not _PREFIX.fullmatch(key_prefix):
            raise StoreConfigError(
                "key_prefix must be segments of [A-Za-z0-9_.-] joined by ':' (a trailing ':' "
                f"is allowed), at most 128 chars, got {key_prefix!r}"
            )
        key_prefix = key_prefix.removesuffix(":")
        if not isinstance(cabinet_id, str) or not _KEY_PART.fullmatch(cabinet_id):
            raise StoreConfigError(
                f"cabinet_id must match [A-Za-z0-9_.-]{{1,64}}, got {cabinet_id!r}"
            )
        self.options = options or StoreOptions()
        self.options.validate()
        self.cabinet_id = cabinet_id
        self.key_prefix = key_prefix
        self.boot_id = boot_id
        if not isinstance(client, resp.Client):
            _Errors.add_redis_py()
        self._client = client
        self._keys = _Keys(key_prefix, cabinet_id)
        self._clock = clock
        opened = time.monotonic()
        # The cabinet's clock stamped on each event (milliseconds since this boot): the
        # daemon's own when it passes it, else since this Store was opened.
        self._uptime_ms = uptime_ms or (lambda: int((time.monotonic() - opened) * 1000))
        self._closed = False
        #: When Redis last answered an operation of this store (monotonic seconds).
        self.answered_at = time.monotonic()
        # One append at a time per process: appends of one Store never race each other
        # on the WATCHed sequence key, only appends of other processes can.
        self._append_lock = asyncio.Lock()

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def connect(
        cls,
        url: str,
        key_prefix: str,
        cabinet_id: str,
        *,
        boot_id: str | None = None,
        options: StoreOptions | None = None,
        clock: Callable[[], float] = time.time,
        production: bool = False,
        uptime_ms: Callable[[], int] | None = None,
    ) -> Store:
        """Open the store at ``url`` and check that it answers.

        First it checks who else can reach it (:mod:`controller.store.access`): a unix
        socket writable by others, or (``production``) Redis over TCP on another host or
        without a password, is refused with StoreConfigError. ``password_file=PATH`` and
        ``username=NAME`` in the URL's query authenticate as a Redis ACL user.

        ``url``: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS),
        ``unix:///path/to/redis.sock?db=0``, or ``memory://`` (a fresh in-process fakeredis)
        / ``memory://NAME`` (an in-process fakeredis shared by every Store of this process
        opened with the same NAME). fakeredis is imported only for ``memory://``.

        ``key_prefix`` (segments of ``[A-Za-z0-9_.-]`` joined by ``:``, a trailing ``:``
        ignored, e.g. ``locker`` or ``locker:fr-lyon-07:``) and ``cabinet_id``
        (``[A-Za-z0-9_.-]{1,64}``) namespace every key as ``{key_prefix}:{cabinet_id}:...``.
        ``boot_id`` is stamped on appended events; :meth:`new_boot` sets it too. ``clock``
        gives seconds since the epoch for the times the store stamps itself (acks, command
        records, pulse intents, code uses, and boots or audit lines given no time).
        ``uptime_ms`` gives the milliseconds since this boot of the daemon, stamped with the
        boot id on every event as its ``cabinet_clock`` (default: since the Store opened).

        Raises StoreConfigError for a bad URL or names, StoreUnavailable if Redis does not
        answer a PING (the client is closed again).
        """
        options = options or StoreOptions()
        options.validate()
        if not isinstance(url, str):
            raise StoreConfigError(f"the Redis URL must be a string, got {url!r}")
        client = cls._client_for(url, cabinet_id, options, production=production)
        try:
            store = cls(
                client, key_prefix, cabinet_id, boot_id=boot_id, options=options, clock=clock,
                uptime_ms=uptime_ms,
            )
        except BaseException:
            await client.aclose()
            raise
        try:
            await store.ping()
        except BaseException:
            await store.close()
            raise
        return store

    @staticmethod
    def _client_for(url: str, cabinet_id: str, options: StoreOptions, *,
                    production: bool = False) -> Any:
        if url.startswith(_MEMORY):
            try:
                import fakeredis
            except ImportError as exc:
                raise StoreConfigError(
                    "memory:// needs fakeredis (install the 'sim' extra)", op="connect"
                ) from exc
            name = url[len(_MEMORY):]
            if name and not _KEY_PART.fullmatch(name):
                raise StoreConfigError(
                    f"memory://NAME: the name must match [A-Za-z0-9_.-]{{1,64}} (no query "
                    f"items), got {name!r}", op="connect")
            if name:
                server = _memory_servers.setdefault(name, fakeredis.FakeServer())
            else:
                server = fakeredis.FakeServer()
            return fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        if not url.startswith(_SCHEMES):
            raise StoreConfigError(
                f"unsupported Redis URL {url!r}: use redis://, rediss://, unix:// or memory://",
                op="connect",
            )
        url, password = resolve_password_file(url)
        check_store_access(url, production=production, has_password=password is not None)
        try:
            # The store's own client never retries: a write retried after a lost answer
            # could apply twice (decision 0004).
            return resp.Client.from_url(
                url,
                password=password,
                socket_timeout=options.socket_timeout_s,
                socket_connect_timeout=options.connect_timeout_s,
                client_name=f"locker-controller.{cabinet_id}",
            )
        except (ValueError, OSError) as exc:
            raise StoreConfigError(f"bad Redis URL {url!r}: {exc}", op="connect") from exc

    @staticmethod
    def forget_memory(name: str) -> None:
        """Drop the in-process server of ``memory://NAME`` (its data is lost)."""
        _memory_servers.pop(name, None)

    async def close(self) -> None:
        """Close the connections. Safe to call twice; later calls raise StoreClosed."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*_Errors.any, OSError):
            await self._client.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self) -> float:
        """Health check: one PING round trip. Returns its duration in seconds; raises
        StoreUnavailable (or StoreTimeout) when Redis does not answer."""
        started = time.perf_counter()
        await self._call("ping", lambda c: c.ping())
        return time.perf_counter() - started

    async def probe_write(self) -> None:
        """Health check of the write path: one small write that expires by itself (a
        minute). Raises StoreFull when Redis refuses writes (memory cap reached, the
        append-only file not writable), StoreUnavailable when it does not answer (a card
        full makes a Redis with ``appendfsync always`` exit)."""
        op = "probe_write"
        stamp = self._now_iso(op)
        await self._call(op, lambda c: c.set(self._keys.probe, stamp, px=60_000))

    # ----------------------------------------------------------------- plumbing

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise StoreClosed("the store is closed", op=op)

    @contextlib.contextmanager
    def _translate(self, op: str) -> Iterator[None]:
        """Map every client (and socket) error to the store's tree, with ``from``."""
        try:
            yield
        except StoreError:
            raise
        except _Errors.timeout as exc:
            raise StoreTimeout(
                f"Redis did not answer within {self.options.socket_timeout_s}s: {exc}", op=op
            ) from exc
        except _Errors.connection as exc:  # includes Redis loading, authentication refused
            raise StoreUnavailable(f"Redis unavailable: {exc}", op=op) from exc
        except _Errors.reply as exc:
            message = str(exc)
            if _refuses_writes(exc):
                raise StoreFull(f"Redis refused the write: {message}", op=op) from exc
            raise StoreRejected(f"Redis refused: {message}", op=op) from exc
        except _Errors.any as exc:
            raise StoreError(f"Redis error: {exc}", op=op) from exc
        except TimeoutError as exc:
            raise StoreTimeout(f"Redis did not answer: {exc}", op=op) from exc
        except OSError as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}", op=op) from exc

    def _unavailable(self, cause: BaseException, op: str) -> StoreUnavailable:
        """The store's error for a connection that failed with ``cause``."""
        if isinstance(cause, (*_Errors.timeout, TimeoutError)):
            return StoreTimeout(f"Redis did not answer: {cause}", op=op)
        return StoreUnavailable(f"Redis unavailable: {cause}", op=op)

    async def _drop_idle_connections(self) -> None:
        """After a connection broke, the other idle pooled connections are suspect too
        (Redis restarted): drop them so the next checkout connects afresh."""
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            with contextlib.suppress(*_Errors.any, OSError):
                await pool.disconnect(inuse_connections=False)

    async def _call(
        self, op: str, fn: Callable[[Any], Awaitable[T]], *, repeatable: bool = True
    ) -> T:
        """One plain command (or a non-transactional batch) with error translation.

        ``repeatable``: running ``fn`` twice gives the same state and the same answer
        (reads, plain overwrites). Such a call that meets a broken connection (Redis
        restarted since the connection was pooled) is tried once more on a fresh
        connection. Others are never repeated: their outcome is the caller's to judge.
        """
        self._check_open(op)
        with self._translate(op):
            try:
                out = await fn(self._client)
            except _Errors.connection:
                if not repeatable or self._closed:
                    raise
                await self._drop_idle_connections()
                out = await fn(self._client)
        self.answered_at = time.monotonic()
        return out

    async def _transaction(
        self,
        op: str,
        watch: Sequence[str],
        plan: Callable[[Pipeline], Awaitable[_Plan[T]]],
    ) -> T:
        """Run ``plan`` as an optimistic transaction: WATCH ``watch``, let ``plan`` read
        (immediate mode) and either answer without writing or call ``pipe.multi()`` and
        queue its writes; EXEC them; start over if a watched key changed meanwhile."""
        self._check_open(op)
        attempts = self.options.max_transaction_attempts
        reconnected = False
        with self._translate(op):
            for attempt in range(attempts):
                async with self._client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*watch)
                        step = await plan(pipe)
                    except (*_Errors.connection, *_Errors.watch) as exc:
                        # Nothing was written yet (EXEC not sent): safe to start over once
                        # on a fresh connection, e.g. the first call after a Redis restart.
                        lost = _lost_connection(exc)
                        if lost is None:
                            continue  # a watched key changed while reading: start over
                        if reconnected or self._closed:
                            raise self._unavailable(lost, op) from exc
                        reconnected = True
                        await self._drop_idle_connections()
                        continue
                    if isinstance(step, _Done):
                        self.answered_at = time.monotonic()
                        return step.value
                    try:
                        results = await pipe.execute()
                    except _Errors.watch as exc:
                        lost = _lost_connection(exc)
                        if lost is not None:
                            # EXEC was sent and the connection died: the transaction may
                            # have been applied. Never run it again: the caller judges.
                            raise self._unavailable(lost, op) from exc
                    else:
                        self.answered_at = time.monotonic()
                        return step.result(results)
                # Jittered back-off so contending processes stop colliding; capped at 20 ms.
                await asyncio.sleep(random.uniform(0, min(0.02, 0.0005 * 2**attempt)))
        raise StoreConflict(
            f"watched keys kept changing; gave up after {attempts} attempts", op=op
        )

    async def _read_batch(self, queue: Callable[[Any], object]) -> list[Any]:
        """Reads queued by ``queue`` on a plain pipeline: one round trip. Called from a
        transaction's plan, after its WATCH: errors are the transaction's to handle."""
        async with self._client.pipeline(transaction=False) as batch:
            queue(batch)
            return list(await batch.execute())

    async def _read_one(self, key: str) -> Any:
        """GET ``key`` like :meth:`_read_batch` (from a transaction's plan)."""
        (value,) = await self._read_batch(lambda b: [b.get(key)])
        return value

    def _now_iso(self, op: str) -> str:
        return to_iso(self._clock(), op=op)

    # ----------------------------------------------------------------- boots

    async def new_boot(self, at: Timestamp | None = None) -> Boot:
        """Register a start of the daemon: increment the boot counter, draw a new boot id,
        record it as current and in the history (bounded). Sets :attr:`boot_id`, which
        :meth:`append` stamps on every event from now on."""
        op = "new_boot"
        started_at = to_iso(self._clock() if at is None else at, op=op)
        keys = self._keys

        async def plan(pipe: Pipeline) -> _Plan[Boot]:
            number = int(await pipe.get(keys.boot_counter) or 0) + 1
            boot = Boot(id=uuid.uuid4().hex, number=number, started_at=started_at)
            raw = _dumps({"id": boot.id, "number": number, "started_at": started_at}, "boot", op)
            pipe.multi()
            pipe.set(keys.boot_counter, number)
            pipe.set(keys.boot_current, raw)
            pipe.lpush(keys.boot_history, raw)
            pipe.ltrim(keys.boot_history, 0, self.options.boot_history - 1)
            return _Write(lambda _results: boot)

        boot = await self._transaction(op, [keys.boot_counter], plan)
        self.boot_id = boot.id
        return boot

    @staticmethod
    def _boot_from(raw: str, op: str) -> Boot:
        data = _loads(raw, "boot", op)
        try:
            return Boot(id=str(data["id"]), number=int(data["number"]),
                        started_at=str(data["started_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreDataError(f"stored boot is malformed: {raw!r:.120}", op=op) from exc

    async def current_boot(self) -> Boot | None:
        """The boot last registered by :meth:`new_boot`, or None before the first."""
        raw = await self._call("current_boot", lambda c: c.get(self._keys.boot_current))
        return None if raw is None else self._boot_from(raw, "current_boot")

    async def boots(self, limit: int = 10) -> list[Boot]:
        """The last ``limit`` boots, newest first (at most ``options.boot_history``)."""
        limit = _check_limit(limit, "boots")
        raws = await self._call(
            "boots", lambda c: c.lrange(self._keys.boot_history, 0, limit - 1)
        )
        return [self._boot_from(raw, "boots") for raw in raws]

    # ----------------------------------------------------------------- outbox

    async def append(
        self,
        kind: str,
        data: Mapping[str, Any],
        at: Timestamp,
        compartment: str | None = None,
    ) -> Event:
        """Commit one event to the outbox and return it, *before* anything publishes it.

        In one transaction: the cabinet's sequence number is incremented and the event is
        stored under it, with a fresh uuid4 ``id``, the current :attr:`boot_id`, ``at``
        normalised to UTC ISO 8601 and a JSON copy of ``data``. Sequence numbers start at 1
        and are gap-free for the life of the store, whatever crashes.

        Raises StoreDataError (bad kind, time, compartment, non-JSON data, no boot id yet:
        call :meth:`new_boot` or pass ``boot_id`` to :meth:`connect`), StoreFull,
        StoreUnavailable. After StoreUnavailable the event may or may not be committed;
        appending it again can at worst give dispatch one event twice under two ids.
        """
        events, _ = await self._commit("append", [NewEvent(kind, data, at, compartment)],
                                       {}, {}, None)
        return events[0]

    async def commit(
        self,
        events: Sequence[NewEvent],
        *,
        compartments: Mapping[str, Mapping[str, Any]] | None = None,
        doors: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Event]:
        """Commit ``events`` (consecutive sequence numbers, in order) together with the
        state they tell about, in one transaction: all of it or none of it, whatever
        crashes.

        ``compartments`` are compartment states (as :meth:`save_compartment` stores them);
        ``doors`` is, per compartment, the door as these events leave it reported
        (:meth:`load_doors` reads it back). A restart compares that record with what the
        sensors say: a movement seen by the process but never committed is still reported
        (see ``docs/decisions/0004-redis-durability.md``). Errors as :meth:`append`; an
        empty ``events`` only writes the states.

        **Retrying after StoreUnavailable.** When every event carries a caller-chosen
        ``id``, the commit leaves a mark under its first event's id (kept
        ``commit_mark_retention_s``). A retry whose first event is the same finds the mark
        and commits nothing twice: the events the first attempt committed come back as
        committed (same ids and seqs; read from the outbox, or rebuilt with
        ``cabinet_clock`` ``None`` if already acknowledged), and only the events the retry
        adds after them are committed, with the states. Without ids, a retry can commit
        the events a second time under new ids and seqs.
        """
        committed, _ = await self._commit("commit", list(events), dict(compartments or {}),
                                          dict(doors or {}), None)
        return committed

    async def commit_with_reply(
        self,
        events: Sequence[NewEvent],
        reply: CommandReply,
        *,
        compartments: Mapping[str, Mapping[str, Any]] | None = None,
        doors: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[list[Event], dict[str, Any] | None]:
        """:meth:`commit` and :meth:`finish_command` in one transaction: the events (with
        their states) and the command's reply are on disk together or not at all, so a
        reply on record never tells of an event that is not (a door command's
        ``unlock_pulse_acked`` and its "pulsed" reply: one fsync, not two).

        Returns the events committed and the reply now on record: ``reply.reply`` the
        first time, the earlier reply if the command was already finished, ``None`` if
        there is no record of the command (never begun, or expired); in that last case
        the events are committed all the same. Errors and retries as :meth:`commit`."""
        return await self._commit("commit", list(events), dict(compartments or {}),
                                  dict(doors or {}), reply)

    async def _commit(
        self,
        op: str,
        drafts: list[NewEvent],
        compartments: dict[str, Mapping[str, Any]],
        doors: dict[str, Mapping[str, Any]],
        reply: CommandReply | None,
    ) -> tuple[list[Event], dict[str, Any] | None]:
        self._check_open(op)
        if not drafts and not compartments and not doors:
            if reply is None:
                return [], None
            try:
                return [], await self.finish_command(reply.command_id, reply.reply,
                                                     unpulsed=reply.unpulsed)
            except UnknownCommand:
                return [], None
        finish = self._finishing(op, reply) if reply is not None else None
        boot_id = self.boot_id
        if drafts and boot_id is None:
            raise StoreDataError("no boot id: call new_boot() or connect(boot_id=...)", op=op)
        checked: list[tuple[str, str, dict[str, Any], str | None, str]] = []
        chosen = [draft.id for draft in drafts if draft.id is not None]
        if chosen and len(chosen) != len(drafts):
            raise StoreDataError("event ids: give every event an id, or none", op=op)
        if len(set(chosen)) != len(chosen):
            raise StoreDataError("event ids: the same id twice in one commit", op=op)
        for draft in drafts:
            kind = draft.kind
            if not isinstance(kind, str) or not kind or len(kind) > 64:
                raise StoreDataError(
                    f"kind must be a non-empty string of <= 64 chars: {kind!r}", op=op)
            if draft.compartment is not None:
                check_id(draft.compartment, "compartment", op=op)
            checked.append((kind, to_iso(draft.at, op=op),
                            _json_object(draft.data, "event data", op), draft.compartment,
                            str(uuid.uuid4()) if draft.id is None
                            else check_id(draft.id, "event id", op=op)))
        state_raw = {check_id(cid, "compartment", op=op):
                     _dumps(_json_object(v, "state", op), "state", op)
                     for cid, v in compartments.items()}
        door_raw = {check_id(cid, "compartment", op=op):
                    _dumps(_json_object(v, "door", op), "door", op)
                    for cid, v in doors.items()}
        keys = self._keys
        uptime_ms = max(0, int(self._uptime_ms()))

        checks = ((keys.pending, "zset"), (keys.compartments, "hash"), (keys.doors, "hash"))
        mark = keys.commit_mark(checked[0][4]) if chosen else None
        mark_ttl_ms = max(1, int(self.options.commit_mark_retention_s * 1000))

        async def plan(pipe: Pipeline) -> _Plan[tuple[list[Event], dict[str, Any] | None]]:
            # The reads in one round trip, on another pooled connection: they follow the
            # WATCH, so any change after them still makes EXEC fail (and start over).
            seq_raw, *types = await self._read_batch(
                lambda b: [b.get(keys.seq), *(b.type(key) for key, _ in checks),
                           *([b.hmget(finish.key, ["state", "reply"])] if finish else []),
                           *([b.get(mark)] if mark else [])])
            mark_raw = types.pop() if mark else None
            record = types.pop() if finish else None
            seq = int(seq_raw or 0)
            # Redis runs every command of a MULTI even when one fails: a key of the wrong
            # type would let the events through while the states they report fail, and
            # the next poll would report the same movement again. Checked first, so the
            # commit is all or nothing.
            for (key, wanted), found in zip(checks, types, strict=True):
                found = found.decode() if isinstance(found, bytes) else str(found)
                if found not in (wanted, "none"):
                    raise StoreDataError(
                        f"{key} holds a {found}, not a {wanted}: the store was changed by "
                        "something other than this daemon; nothing committed", op=op)
            # A retry of a commit whose outcome was lost: what it committed is not
            # committed again. A retry that grew and lost its answer too left its own mark
            # under its first new event: followed, at most once per event.
            already: list[Event] = []
            while mark_raw is not None and len(already) < len(checked):
                found = await self._already_committed(mark_raw, checked[len(already):], op)
                if not found:
                    break
                already += found
                if len(already) < len(checked):
                    mark_raw = await self._read_one(keys.commit_mark(checked[len(already)][4]))
            out: list[Event] = []
            # The cabinet's clock as the events are committed, in this boot: the order
            # dispatch can trust inside one boot (the wall clock may step).
            reading = {"boot_id": str(boot_id), "uptime_ms": uptime_ms}
            rest = checked[len(already):]
            for kind, at_iso, payload, compartment, event_id in rest:
                seq += 1
                out.append(Event(
                    id=event_id, seq=seq, kind=kind, at=at_iso, boot_id=str(boot_id),
                    cabinet=self.cabinet_id, compartment=compartment, data=payload,
                    cabinet_clock=reading,
                ))
            pipe.multi()
            if out:
                pipe.set(keys.seq, seq)
                if chosen:
                    pipe.set(keys.commit_mark(out[0].id), f"{out[0].seq} {len(out)}",
                             px=mark_ttl_ms)
            for event in out:
                pipe.set(keys.event(event.id), _dumps(event.to_dict(), "event", op))
                pipe.zadd(keys.pending, {event.id: event.seq})
            if state_raw:
                pipe.hset(keys.compartments, mapping=state_raw)
            if door_raw:
                pipe.hset(keys.doors, mapping=door_raw)
            answer = None if finish is None else finish.queue(pipe, record or (None,), op)
            return _Write(lambda _results: (already + out, answer))

        watch = [keys.seq] if finish is None else [keys.seq, finish.key]
        async with self._append_lock:
            return await self._transaction(op, watch, plan)

    async def _already_committed(
        self,
        mark_raw: Any,
        checked: list[tuple[str, str, dict[str, Any], str | None, str]],
        op: str,
    ) -> list[Event]:
        """The leading events of ``checked`` that an earlier attempt committed, from the
        mark it left (``"<first seq> <count>"``) under their first id; [] if none."""
        if mark_raw is None:
            return []
        text = mark_raw.decode() if isinstance(mark_raw, bytes) else str(mark_raw)
        try:
            first_seq, count = (int(part) for part in text.split())
        except ValueError:
            raise StoreDataError(f"commit mark {text!r} is not '<seq> <count>'", op=op) from None
        done = checked[:max(0, min(count, len(checked)))]
        keys = self._keys
        raws = await self._read_batch(lambda b: [b.get(keys.event(c[4])) for c in done])
        out: list[Event] = []
        for offset, ((kind, at_iso, payload, compartment, event_id), raw) in enumerate(
                zip(done, raws, strict=True)):
            if raw is not None:
                out.append(Event.from_dict(_loads(raw, "event", op), op=op))
                continue
            # Committed and already acknowledged: rebuilt for the caller's count.
            out.append(Event(id=event_id, seq=first_seq + offset, kind=kind, at=at_iso,
                             boot_id=str(self.boot_id), cabinet=self.cabinet_id,
                             compartment=compartment, data=payload, cabinet_clock=None))
        return out

    async def pending(self, limit: int = 100, *, after_seq: int = 0) -> list[Event]:
        """Up to ``limit`` unacknowledged events with ``seq > after_seq``, in sequence
        order. The publisher replays these after a restart: same ids, seqs and times."""
        op = "pending"
        limit = _check_limit(limit, op)
        after_seq = _check_seq(after_seq, op)
        keys = self._keys

        async def read(c: Any) -> list[Any]:
            ids = await c.zrangebyscore(keys.pending, f"({after_seq}", "+inf", start=0, num=limit)
            if not ids:
                return []
            return list(await c.mget([keys.event(i) for i in ids]))

        raws = await self._call(op, read)
        # A None is an event acknowledged between the two reads: it is no longer pending.
        return [Event.from_dict(_loads(raw, "event", op), op=op) for raw in raws if raw is not None]

    async def depth(self) -> int:
        """Number of events waiting for an acknowledgement."""
        return int(await self._call("depth", lambda c: c.zcard(self._keys.pending)))

    async def last_seq(self) -> int:
        """The last sequence number handed out (0 before the first event)."""
        return int(await self._call("last_seq", lambda c: c.get(self._keys.seq)) or 0)

    async def ack(self, ref: str | int) -> bool:
        """Remove one event after the broker acknowledged it, by id or by seq, and log it
        in the delivered log (trimmed by count and age, in the same transaction).

        Returns True if the event was pending and is now removed, False if it was not
        pending (already acknowledged, or never existed): acking twice is harmless.
        """
        op = "ack"
        keys = self._keys
        if isinstance(ref, int) and not isinstance(ref, bool):
            seq = _check_seq(ref, op)
            ids = await self._call(op, lambda c: c.zrangebyscore(keys.pending, seq, seq))
            if not ids:
                return False
            event_id = str(ids[0])
        elif isinstance(ref, str):
            event_id = check_id(ref, "event id", op=op)
        else:
            raise StoreDataError(f"ack takes an event id or a seq, got {ref!r}", op=op)
        event_key = keys.event(event_id)
        acked_at = self._now_iso(op)
        max_age = self.options.delivered_max_age_s

        async def plan(pipe: Pipeline) -> _Plan[bool]:
            raw = await pipe.get(event_key)
            if raw is None:
                return _Done(False)
            oldest_ms = None
            if max_age is not None:
                # Stream ids are the Redis server's clock: trim against that clock too.
                seconds, micros = await pipe.time()
                oldest_ms = max(0, int((seconds + micros / 1e6 - max_age) * 1000))
            pipe.multi()
            pipe.zrem(keys.pending, event_id)
            pipe.delete(event_key)
            pipe.xadd(
                keys.delivered, {"event": raw, "acked_at": acked_at},
                maxlen=self.options.delivered_max_entries, approximate=False,
            )
            if oldest_ms is not None:
                pipe.xtrim(keys.delivered, minid=f"{oldest_ms}-0", approximate=False)
            return _Write(lambda _results: True)

        return await self._transaction(op, [event_key], plan)

    async def ack_many(self, event_ids: Sequence[str]) -> int:
        """Remove several events the broker acknowledged, in one transaction (one fsync),
        logging each in the delivered log in the order given. Events no longer pending
        are skipped (acking twice is harmless). Returns how many were removed.

        The outbox pump calls it with the longest run of events acknowledged without a
        gap, so what stays pending is always a suffix of what was published: a crash
        between the PUBACKs and this transaction only makes the next process publish some
        events again (dispatch dedupes by id), never skip one."""
        op = "ack_many"
        ids = [check_id(i, "event id", op=op) for i in event_ids]
        if not ids:
            return 0
        keys = self._keys
        event_keys = [keys.event(i) for i in ids]
        acked_at = self._now_iso(op)
        max_age = self.options.delivered_max_age_s

        async def plan(pipe: Pipeline) -> _Plan[int]:
            raws, (seconds, micros) = await self._read_batch(
                lambda b: [b.mget(event_keys), b.time()])
            present = [(i, k, raw) for i, k, raw in zip(ids, event_keys, raws, strict=True)
                       if raw is not None]
            if not present:
                return _Done(0)
            oldest_ms = None
            if max_age is not None:
                oldest_ms = max(0, int((seconds + micros / 1e6 - max_age) * 1000))
            pipe.multi()
            pipe.zrem(keys.pending, *[i for i, _k, _r in present])
            pipe.delete(*[k for _i, k, _r in present])
            for _i, _k, raw in present:
                pipe.xadd(keys.delivered, {"event": raw, "acked_at": acked_at},
                          maxlen=self.options.delivered_max_entries, approximate=False)
            if oldest_ms is not None:
                pipe.xtrim(keys.delivered, minid=f"{oldest_ms}-0", approximate=False)
            return _Write(lambda _results: len(present))

        return await self._transaction(op, event_keys, plan)

    async def delivered(self, limit: int = 100) -> list[Delivered]:
        """The last ``limit`` acknowledged events, oldest first (bounded audit trail)."""
        op = "delivered"
        limit = _check_limit(limit, op)
        entries = await self._call(
            op, lambda c: c.xrevrange(self._keys.delivered, "+", "-", count=limit)
        )
        out: list[Delivered] = []
        for entry_id, fields in reversed(entries):
            event = Event.from_dict(_loads(fields.get("event"), "event", op), op=op)
            out.append(Delivered(entry_id=str(entry_id), event=event,
                                 acked_at=str(fields.get("acked_at", ""))))
        return out

    # ----------------------------------------------------------------- commands

    def _command_from(self, command_id: str, fields: Mapping[str, str], op: str) -> CommandRecord:
        try:
            reply_raw = fields.get("reply")
            reply = None if reply_raw is None else _loads(reply_raw, "reply", op)
            state = fields["state"]
            if state not in ("in_progress", "done"):
                raise ValueError(state)
            return CommandRecord(
                id=command_id,
                digest=fields["digest"],
                state="done" if state == "done" else "in_progress",
                begun_at=fields["begun_at"],
                boot_id=fields.get("boot_id") or None,
                expires=_loads(fields.get("expires", "null"), "expires", op),
                reply=reply,
                finished_at=fields.get("finished_at"),
                pulses={
                    name[len("pulse:"):]: value
                    for name, value in fields.items()
                    if name.startswith("pulse:")
                },
                reply_to=None if "reply_to" not in fields
                else ReplyTarget.from_dict(_loads(fields["reply_to"], "reply_to", op)),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise StoreDataError(f"command record {command_id!r} is malformed", op=op) from exc

    async def begin_command(
        self, command_id: str, digest: str, expires: Any = None, *, retake: bool = False,
        pulse: str | None = None, reply_to: ReplyTarget | None = None,
    ) -> NewCommand | AlreadySeen:
        """Claim a command id, atomically, before doing anything for it.

        ``digest`` identifies the command body (e.g. a SHA-256 of the signed text) so a
        reused id with another body can be told apart; ``expires`` is the command's own
        deadline as the daemon expresses it (kept as JSON, for reconciliation only). The
        record lives ``options.command_retention_s`` (default 24 h), far longer than any
        command.

        Returns :class:`NewCommand` if this call created the record: the caller owns the
        command. Returns :class:`AlreadySeen` if a record exists: the caller must not act;
        it answers with ``reply`` (the first reply) if the command finished, or reports it
        in progress. Raises StoreUnavailable without a record when Redis is down: do not act.

        ``retake=True`` is for the owner of an earlier attempt with this id that stopped on
        a store error *before acting* (it knows, in memory, that nothing was pulsed): an
        unfinished record of the same ``digest`` is begun afresh, its pulse intents
        dropped, and :class:`NewCommand` returned. A finished record, or one of another
        digest, is :class:`AlreadySeen` as ever. Never retake after a restart: then only
        the record knows, and a recorded intent means a pulse may have happened.

        ``pulse``: a compartment this command is about to pulse. Its intent (as
        :meth:`record_pulse_intent` writes it) goes into the new record, in the same
        transaction: a door command costs one fsync'd write before its pulse. A command
        that ends without pulsing drops it again (``finish_command(unpulsed=...)``).

        ``reply_to``: where the request asked for its reply (MQTT 5 response topic and
        correlation data), kept in the record: a command a crash interrupted is answered
        there at start-up.
        """
        op = "begin_command"
        command_id = check_id(command_id, "command id", op=op)
        if not isinstance(digest, str) or not digest:
            raise StoreDataError("digest must be a non-empty string", op=op)
        expires_raw = _dumps(expires, "expires", op)
        if pulse is not None:
            pulse = check_id(pulse, "compartment", op=op)
        now = self._clock()
        key = self._keys.command(command_id)
        retention_ms = max(1, int(self.options.command_retention_s * 1000))

        async def plan(pipe: Pipeline) -> _Plan[NewCommand | AlreadySeen]:
            existing = await pipe.hgetall(key)
            if existing:
                record = self._command_from(command_id, existing, op)
                if not (retake and not record.finished and record.digest == digest):
                    return _Done(AlreadySeen(record=record,
                                             digest_matches=record.digest == digest))
            fields = {
                "digest": digest,
                "state": "in_progress",
                "begun_at": to_iso(now, op=op),
                "boot_id": self.boot_id or "",
                "expires": expires_raw,
            }
            if pulse is not None:
                fields[f"pulse:{pulse}"] = to_iso(now, op=op)
            if reply_to is not None:
                fields["reply_to"] = _dumps(reply_to.to_dict(), "reply_to", op)
            record = self._command_from(command_id, fields, op)
            pipe.multi()
            if existing:
                pipe.delete(key)  # the retaken attempt's fields, pulse intents included
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, retention_ms)
            pipe.zadd(self._keys.commands_open, {command_id: now})
            return _Write(lambda _results: NewCommand(record=record))

        return await self._transaction(op, [key], plan)

    async def record_pulse_intent(self, command_id: str, compartment: str) -> bool:
        """Write "about to pulse ``compartment`` for ``command_id``" before the pulse.

        Returns True exactly once per (command, compartment): the intent is committed and
        the caller may pulse now. Returns False when an intent was already recorded (a
        pulse may have happened, e.g. before a crash) or the command already finished:
        the caller must not pulse. Raises UnknownCommand when the command was never begun,
        StoreUnavailable when Redis is down (do not pulse).
        """
        op = "record_pulse_intent"
        command_id = check_id(command_id, "command id", op=op)
        compartment = check_id(compartment, "compartment", op=op)
        key = self._keys.command(command_id)
        field = f"pulse:{compartment}"
        marked_at = self._now_iso(op)

        async def plan(pipe: Pipeline) -> _Plan[bool]:
            state, already = await pipe.hmget(key, ["state", field])
            if state is None:
                raise UnknownCommand(
                    f"no record for command {command_id!r}", op=op, command_id=command_id
                )
            if state == "done" or already is not None:
                return _Done(False)
            pipe.multi()
            pipe.hset(key, field, marked_at)
            return _Write(lambda _results: True)

        return await self._transaction(op, [key], plan)

    async def finish_command(self, command_id: str, reply: Mapping[str, Any], *,
                             unpulsed: Sequence[str] = ()) -> dict[str, Any]:
        """Store the reply of a command and close it; the first reply wins.

        ``unpulsed``: compartments whose recorded pulse intent did not lead to a pulse
        (the caller knows it stopped before sending the frame); their intents are dropped
        with the reply, so the record never claims a pulse that did not happen.

        Returns the reply now on record: ``reply`` itself (as a JSON copy) the first time,
        the earlier reply on any later call. The record keeps its expiry. Raises
        UnknownCommand when the command was never begun (or its record expired).
        """
        op = "finish_command"
        finish = self._finishing(op, CommandReply(command_id, reply, tuple(unpulsed)))

        async def plan(pipe: Pipeline) -> _Plan[dict[str, Any]]:
            record = await pipe.hmget(finish.key, ["state", "reply"])
            if record[0] is None:
                raise UnknownCommand(f"no record for command {finish.command_id!r}",
                                     op=op, command_id=finish.command_id)
            stored = finish.stored(record, op)
            if stored is not None:
                return _Done(stored)
            pipe.multi()
            finish.queue(pipe, record, op)
            return _Write(lambda _results: finish.reply)

        return await self._transaction(op, [finish.key], plan)

    def _finishing(self, op: str, reply: CommandReply) -> _Finish:
        command_id = check_id(reply.command_id, "command id", op=op)
        reply_copy = _json_object(reply.reply, "reply", op)
        return _Finish(
            command_id=command_id,
            key=self._keys.command(command_id),
            open_index=self._keys.commands_open,
            reply=reply_copy,
            raw=_dumps(reply_copy, "reply", op),
            finished_at=self._now_iso(op),
            gone=tuple(f"pulse:{check_id(c, 'compartment', op=op)}" for c in reply.unpulsed),
        )

    async def get_command(self, command_id: str) -> CommandRecord | None:
        """The record of ``command_id``, or None (never seen, or expired)."""
        op = "get_command"
        command_id = check_id(command_id, "command id", op=op)
        fields = await self._call(op, lambda c: c.hgetall(self._keys.command(command_id)))
        return self._command_from(command_id, fields, op) if fields else None

    async def unfinished_commands(self, limit: int = 1000) -> list[CommandRecord]:
        """Commands begun and never finished, oldest first: what a crash interrupted.

        At start-up the daemon answers each (its ``pulses`` tell which compartments may
        have been pulsed) and finishes it. Ids whose record expired are dropped from the
        index on the way.
        """
        op = "unfinished_commands"
        limit = _check_limit(limit, op)
        keys = self._keys

        async def read(c: Any) -> list[tuple[str, dict[str, str]]]:
            ids = [str(i) for i in await c.zrange(keys.commands_open, 0, limit - 1)]
            if not ids:
                return []
            async with c.pipeline(transaction=False) as batch:
                for command_id in ids:
                    batch.hgetall(keys.command(command_id))
                records = await batch.execute()
            gone = [i for i, fields in zip(ids, records, strict=True) if not fields]
            if gone:
                await c.zrem(keys.commands_open, *gone)
            return [(i, f) for i, f in zip(ids, records, strict=True) if f]

        rows = await self._call(op, read)
        return [self._command_from(command_id, fields, op) for command_id, fields in rows]

    # ----------------------------------------------------------------- state

    async def _hash_save(self, op: str, key: str, field: str, value: Mapping[str, Any]) -> None:
        raw = _dumps(_json_object(value, "state", op), "state", op)
        await self._call(op, lambda c: c.hset(key, field, raw))

    async def _hash_load(self, op: str, key: str, field: str) -> dict[str, Any] | None:
        raw = await self._call(op, lambda c: c.hget(key, field))
        if raw is None:
            return None
        value = _loads(raw, "state", op)
        if not isinstance(value, dict):
            raise StoreDataError(f"stored value of {field!r} is not an object", op=op)
        return value

    async def _hash_load_all(self, op: str, key: str) -> dict[str, dict[str, Any]]:
        fields = await self._call(op, lambda c: c.hgetall(key))
        out: dict[str, dict[str, Any]] = {}
        for name, raw in fields.items():
            value = _loads(raw, "state", op)
            if not isinstance(value, dict):
                raise StoreDataError(f"stored value of {name!r} is not an object", op=op)
            out[str(name)] = value
        return out

    async def _hash_delete(self, op: str, key: str, field: str) -> bool:
        return bool(await self._call(op, lambda c: c.hdel(key, field), repeatable=False))

    async def save_compartment(self, compartment: str, state: Mapping[str, Any]) -> None:
        """Store the state of one compartment (an opaque JSON object from the domain)."""
        compartment = check_id(compartment, "compartment", op="save_compartment")
        await self._hash_save("save_compartment", self._keys.compartments, compartment, state)

    async def load_compartment(self, compartment: str) -> dict[str, Any] | None:
        """The stored state of one compartment, or None."""
        compartment = check_id(compartment, "compartment", op="load_compartment")
        return await self._hash_load("load_compartment", self._keys.compartments, compartment)

    async def load_compartments(self) -> dict[str, dict[str, Any]]:
        """Every stored compartment state, by compartment id."""
        return await self._hash_load_all("load_compartments", self._keys.compartments)

    async def delete_compartment(self, compartment: str) -> bool:
        """Forget one compartment's state; True if there was one."""
        compartment = check_id(compartment, "compartment", op="delete_compartment")
        return await self._hash_delete("delete_compartment", self._keys.compartments, compartment)

    async def load_doors(self) -> dict[str, dict[str, Any]]:
        """Every door as last reported by :meth:`commit`, by compartment id."""
        return await self._hash_load_all("load_doors", self._keys.doors)

    async def save_order(self, order_id: str, order: Mapping[str, Any]) -> None:
        """Store one order (an opaque JSON object from the domain)."""
        order_id = check_id(order_id, "order id", op="save_order")
        await self._hash_save("save_order", self._keys.orders, order_id, order)

    async def load_order(self, order_id: str) -> dict[str, Any] | None:
        """The stored order, or None."""
        order_id = check_id(order_id, "order id", op="load_order")
        return await self._hash_load("load_order", self._keys.orders, order_id)

    async def load_orders(self) -> dict[str, dict[str, Any]]:
        """Every stored order, by order id."""
        return await self._hash_load_all("load_orders", self._keys.orders)

    async def stored_order_ids(self) -> set[str]:
        """The ids of every order with a stored record or stored codes (for the sweep of
        orders no compartment holds any more)."""
        keys = self._keys

        async def ids(c: Any) -> set[str]:
            return {str(k) for k in await c.hkeys(keys.orders)} | \
                {str(k) for k in await c.hkeys(keys.codes)}

        return await self._call("stored_order_ids", ids)

    # ----------------------------------------------------------------- config overlay

    async def save_config_overlay(self, overlay: Mapping[str, Any]) -> None:
        """Store the configuration changes dispatch applied (a partial config, JSON),
        which the daemon layers over its file at every start."""
        await self._hash_save("save_config_overlay", self._keys.config, "overlay", overlay)

    async def load_config_overlay(self) -> dict[str, Any] | None:
        """The stored configuration overlay, or None when dispatch never applied one."""
        return await self._hash_load("load_config_overlay", self._keys.config, "overlay")

    async def save_revocations(self, revocations: Mapping[str, Any]) -> None:
        """Store dispatch's list of revoked technician grants (``{"serial", "revoked"}``)."""
        await self._hash_save("save_revocations", self._keys.config, "revocations", revocations)

    async def load_revocations(self) -> dict[str, Any] | None:
        """The stored revocation list, or None when dispatch never pushed one."""
        return await self._hash_load("load_revocations", self._keys.config, "revocations")

    async def delete_order(self, order_id: str) -> bool:
        """Forget one order; True if there was one."""
        order_id = check_id(order_id, "order id", op="delete_order")
        return await self._hash_delete("delete_order", self._keys.orders, order_id)

    # ----------------------------------------------------------------- lane data

    async def save_codes(self, order_id: str, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store the code records of one order (``code_id``, ``purpose``, ``verifier``: a
        keyed verifier, never a code) and index each verifier to the order, all or nothing.

        Returns the positions of records whose verifier another order already holds
        (nothing is written then: two live codes must never be the same code)."""
        op = "save_codes"
        order_id = check_id(order_id, "order id", op=op)
        rows = [dict(r) for r in records]
        for r in rows:
            check_id(r.get("code_id"), "code id", op=op)
            check_id(r.get("verifier"), "verifier", op=op)
        keys = self._keys
        raw = _dumps({"codes": rows}, "codes", op)

        async def plan(pipe: Pipeline) -> _Plan[list[int]]:
            held = await pipe.hmget(keys.code_index, [r["verifier"] for r in rows]) if rows \
                else []
            clash = [i for i, h in enumerate(held)
                     if h is not None and _loads(h, "code index", op).get("order_id") != order_id]
            if clash:
                return _Done(clash)
            old = await pipe.hget(keys.codes, order_id)
            stale = [str(r.get("verifier")) for r in
                     (_loads(old, "codes", op).get("codes") or [] if old else [])]
            pipe.multi()
            if stale:
                pipe.hdel(keys.code_index, *stale)
            pipe.hset(keys.codes, order_id, raw)
            for r in rows:
                pipe.hset(keys.code_index, r["verifier"], _dumps(
                    {"order_id": order_id, "code_id": r["code_id"], "purpose": r.get("purpose")},
                    "code index", op))
            return _Write(lambda _results: [])

        return await self._transaction(op, [keys.code_index, keys.codes], plan)

    async def find_code(self, verifier: str) -> dict[str, Any] | None:
        """The ``{order_id, code_id, purpose}`` a verifier leads to, or None: one lookup,
        whatever the number of orders."""
        op = "find_code"
        verifier = check_id(verifier, "verifier", op=op)
        raw = await self._call(op, lambda c: c.hget(self._keys.code_index, verifier))
        if raw is None:
            return None
        value = _loads(raw, "code index", op)
        if not isinstance(value, dict):
            raise StoreDataError("stored code index entry is not an object", op=op)
        return value

    async def load_codes(self, order_id: str) -> dict[str, Any] | None:
        """The code records of one order, or None."""
        order_id = check_id(order_id, "order id", op="load_codes")
        return await self._hash_load("load_codes", self._keys.codes, order_id)

    async def delete_codes(self, order_id: str) -> bool:
        """Forget the codes of one order, their index entries and used marks; True if there
        were codes."""
        op = "delete_codes"
        order_id = check_id(order_id, "order id", op=op)
        keys = self._keys

        async def plan(pipe: Pipeline) -> _Plan[bool]:
            old = await pipe.hget(keys.codes, order_id)
            stale = [str(r.get("verifier")) for r in
                     (_loads(old, "codes", op).get("codes") or [] if old else [])]
            pipe.multi()
            if stale:
                pipe.hdel(keys.code_index, *stale)
            pipe.hdel(keys.codes, order_id)
            pipe.delete(keys.codes_used(order_id))
            return _Write(lambda _results: old is not None)

        return await self._transaction(op, [keys.codes], plan)

    async def mark_code_used(self, order_id: str, code_id: str) -> bool:
        """Mark one code of an order as used, before the door opens (single use).

        Returns True the first time (the caller may open), False if it was already used.
        """
        op = "mark_code_used"
        order_id = check_id(order_id, "order id", op=op)
        code_id = check_id(code_id, "code id", op=op)
        used_at = self._now_iso(op)
        created = await self._call(
            op,
            lambda c: c.hsetnx(self._keys.codes_used(order_id), code_id, used_at),
            repeatable=False,
        )
        return bool(created)

    async def code_used_at(self, order_id: str, code_id: str) -> str | None:
        """When a code was marked used, or None if it was not."""
        op = "code_used_at"
        order_id = check_id(order_id, "order id", op=op)
        code_id = check_id(code_id, "code id", op=op)
        used = await self._call(op, lambda c: c.hget(self._keys.codes_used(order_id), code_id))
        return None if used is None else str(used)

    async def save_lockout(self, subject: str, state: Mapping[str, Any], ttl_s: float) -> None:
        """Store a wrong-code lockout counter (opaque) for ``subject`` (a lane, a scanner, an
        order) that disappears by itself after ``ttl_s`` seconds; it survives restarts."""
        op = "save_lockout"
        subject = check_id(subject, "lockout subject", op=op)
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise StoreDataError(f"ttl_s must be > 0, got {ttl_s!r}", op=op)
        raw = _dumps(_json_object(state, "lockout", op), "lockout", op)
        ttl_ms = max(1, int(ttl_s * 1000))
        await self._call(op, lambda c: c.set(self._keys.lockout(subject), raw, px=ttl_ms))

    async def load_lockout(self, subject: str) -> dict[str, Any] | None:
        """The lockout counter of ``subject``, or None (never set, cleared or expired)."""
        op = "load_lockout"
        subject = check_id(subject, "lockout subject", op=op)
        raw = await self._call(op, lambda c: c.get(self._keys.lockout(subject)))
        if raw is None:
            return None
        value = _loads(raw, "lockout", op)
        if not isinstance(value, dict):
            raise StoreDataError("stored lockout is not an object", op=op)
        return value

    async def clear_lockout(self, subject: str) -> bool:
        """Remove the lockout of ``subject``; True if there was one."""
        op = "clear_lockout"
        subject = check_id(subject, "lockout subject", op=op)
        return bool(
            await self._call(op, lambda c: c.delete(self._keys.lockout(subject)), repeatable=False)
        )

    # ----------------------------------------------------------------- audit

    async def audit(
        self,
        action: str,
        *,
        actor: str,
        at: Timestamp | None = None,
        compartment: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one line to the audit log (door opening, block, config change, alarm...):
        who (``actor``: "dispatch", "lane", "technician:jdoe"...), what (``action``), when
        (``at``, default now), where, and opaque ``details``. The log keeps the last
        ``options.audit_max_entries`` lines. Never put a pickup code in ``details``."""
        op = "audit"
        for what, value in (("action", action), ("actor", actor)):
            if not isinstance(value, str) or not value or len(value) > 128:
                raise StoreDataError(f"{what} must be a non-empty string of <= 128 chars", op=op)
        if compartment is not None:
            check_id(compartment, "compartment", op=op)
        at_iso = to_iso(self._clock() if at is None else at, op=op)
        details_copy = _json_object(details or {}, "details", op)
        fields = {
            "action": action,
            "actor": actor,
            "at": at_iso,
            "compartment": compartment or "",
            "details": _dumps(details_copy, "details", op),
        }
        entry_id = await self._call(
            op,
            lambda c: c.xadd(
                self._keys.audit, fields,
                maxlen=self.options.audit_max_entries, approximate=False,
            ),
            repeatable=False,
        )
        return AuditEntry(
            entry_id=str(entry_id), action=action, actor=actor, at=at_iso,
            compartment=compartment, details=details_copy,
        )

    async def audit_log(self, limit: int = 100, *, after: str | None = None) -> list[AuditEntry]:
        """Audit lines, oldest first: the last ``limit`` ones, or with ``after`` (an
        ``entry_id``) the first ``limit`` ones after it, for paging forward."""
        op = "audit_log"
        limit = _check_limit(limit, op)
        key = self._keys.audit
        if after is None:
            rows = list(reversed(await self._call(
                op, lambda c: c.xrevrange(key, "+", "-", count=limit)
            )))
        else:
            if not isinstance(after, str) or not re.fullmatch(r"\d+-\d+", after):
                raise StoreDataError(f"after must be an audit entry id, got {after!r}", op=op)
            rows = await self._call(op, lambda c: c.xrange(key, f"({after}", "+", count=limit))
        out: list[AuditEntry] = []
        for entry_id, fields in rows:
            details = _loads(fields.get("details", "{}"), "details", op)
            out.append(AuditEntry(
                entry_id=str(entry_id),
                action=str(fields.get("action", "")),
                actor=str(fields.get("actor", "")),
                at=str(fields.get("at", "")),
                compartment=fields.get("compartment") or None,
                details=details if isinstance(details, dict) else {},
            ))
        return out

    async def audit_length(self) -> int:
        """Number of lines in the audit log."""
        return int(await self._call("audit_length", lambda c: c.xlen(self._keys.audit)))


def _refuses_writes(exc: BaseException) -> bool:
    """Redis refused a write for want of room: ``OOM`` (maxmemory under noeviction;
    redis-py strips the code and raises OutOfMemoryError) or ``MISCONF`` (the data files
    cannot be written). Inside a transaction both clients prefix the message with the
    command that failed, so the code is looked for in the whole message."""
    if isinstance(exc, _Errors.out_of_memory):
        return True
    message = str(exc)
    return message.startswith(("OOM", "MISCONF")) or "MISCONF " in message \
        or "used memory > 'maxmemory'" in message
