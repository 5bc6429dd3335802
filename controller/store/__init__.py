"""The durable local store (Redis): outbox, command records, state, audit log.

The only package that talks to Redis (checked by import-linter), with a client of its own
(:mod:`controller.store.resp`; redis-py and fakeredis only for ``memory://``). Everything the daemon
must not forget across a crash of itself or of Redis goes through :class:`Store`::

    store = await Store.connect("redis://127.0.0.1:6379/0", "locker", "cab-01")
    boot = await store.new_boot()
    event = await store.append("door_opened", {"by": "code"}, at=time.time(), compartment="A01")
    for event in await store.pending(100):      # publish, then on PUBACK:
        await store.ack(event.id)

Errors (all raised ``from`` the client's error they translate)::

    StoreError
     ├── StoreConfigError (ValueError)      bad URL, key prefix or cabinet id
     ├── StoreDataError (ValueError)        value not storable / stored value unreadable
     ├── UnknownCommand (KeyError)          no record for a command id
     ├── StoreConflict (RuntimeError)       optimistic transaction attempts exhausted
     ├── StoreRejected                      Redis answered with an error
     │    └── StoreFull                     OOM under noeviction, or AOF unwritable
     └── StoreUnavailable (ConnectionError) Redis unreachable: refused, reset, loading
          ├── StoreTimeout (TimeoutError)   no answer within the socket timeout
          └── StoreClosed                   used after close()

See :mod:`controller.store.errors` for what each means to the caller.
"""

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
    Timestamp,
    to_iso,
)
from controller.store.store import Store, StoreOptions

__all__ = [
    "AlreadySeen",
    "AuditEntry",
    "Boot",
    "CommandRecord",
    "CommandReply",
    "Delivered",
    "Event",
    "NewCommand",
    "NewEvent",
    "Store",
    "StoreClosed",
    "StoreConfigError",
    "StoreConflict",
    "StoreDataError",
    "StoreError",
    "StoreFull",
    "StoreOptions",
    "StoreRejected",
    "StoreTimeout",
    "StoreUnavailable",
    "Timestamp",
    "UnknownCommand",
    "to_iso",
]
