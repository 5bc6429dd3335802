"""Start-up steps that come between opening the parts and running them: the configuration
overlay dispatch stored, commands a crash interrupted, and reconciliation of the stored
state with what the sensors say. Each takes what it needs; none starts a task.

:func:`local_file_issues` is the part of the start-up checks that needs no network (the
store's socket and password file, the code key and its directory), for ``--check`` and
``lockerctl config check`` to refuse what the start would."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from controller.contract.messages import ClockReading, Reply, encode, from_builtins, to_builtins
from controller.domain.cabinet_model import CabinetModel
from controller.security.codes import code_key_issue
from controller.security.ed25519 import VerifyKey, verify_key
from controller.services.config import OverlayRejected, settings_with_overlay
from controller.services.reporting import EventSink, PendingEvent
from controller.settings import Settings
from controller.settings.deployment import is_production, trusted_owners
from controller.store import Store
from controller.store.access import check_store_access, resolve_password_file
from controller.store.errors import StoreConfigError
from controller.store.records import ReplyTarget
from controller.store.resp import parse_url

__all__ = [
    "InterruptedReply",
    "answer_interrupted",
    "default_code_key_file",
    "load_overlay",
    "local_file_issues",
    "public_keys",
    "reconcile",
]

log = logging.getLogger("controller.daemon")


async def load_overlay(
    store: Store, config_path: Path | None, flags: Mapping[str, Any]
) -> tuple[Settings | None, PendingEvent | None]:
    """Layer the configuration dispatch applied (kept in the store) over the file: the
    settings to run on (None: the file's), and an event to report. An overlay that no
    longer validates (the file changed on site) is ignored and reported; the cabinet runs
    on its file."""
    overlay = await store.load_config_overlay()
    if not overlay or config_path is None:
        return None, None
    try:
        settings = settings_with_overlay(config_path, dict(flags), overlay)
    except OverlayRejected as exc:
        log.error("stored configuration overlay refused, running on the file",
                  extra={"ctx": {"key": exc.key, "error": str(exc)}})
        return None, PendingEvent("config_overlay_refused",
                                  {"key": exc.key, "message": str(exc)[:500]}, time.time())
    log.info("configuration overlay applied", extra={"ctx": {"sections": sorted(overlay)}})
    return settings, None


@dataclass(frozen=True, slots=True)
class InterruptedReply:
    """The reply of a command a restart interrupted, to send once where it was asked for."""

    command_id: str
    payload: bytes
    reply_to: ReplyTarget | None


async def answer_interrupted(store: Store, sink: EventSink,
                             reading: ClockReading) -> list[InterruptedReply]:
    """Commands a crash interrupted: finish them with a refusal, never act again.

    Returns their replies (as stored: a repeat of the id gets the same), for the daemon to
    publish once, on the topic each command asked for (MQTT 5 response topic and
    correlation data kept with its claim; else the cabinet's ``reply`` topic), as soon as
    the broker is there: every command gets its reply without being sent again."""
    replies: list[InterruptedReply] = []
    for record in await store.unfinished_commands():
        pulsed = sorted(record.pulses)
        reply = {
            "id": record.id, "ok": False,
            "error": {"code": "internal",
                      "message": "interrupted by a restart; not executed again"
                      + (f" (a pulse may have been sent to {', '.join(pulsed)})"
                         if pulsed else "")},
            "cabinet_clock": to_builtins(reading),
        }
        stored = await store.finish_command(record.id, reply)
        replies.append(InterruptedReply(record.id, encode(from_builtins(Reply, stored)),
                                        record.reply_to))
        await sink.emit([PendingEvent.command_interrupted(record.id, pulsed)])
    return replies


async def reconcile(
    model: CabinetModel, sink: EventSink, stored: Mapping[str, Mapping[str, Any]]
) -> None:
    """Compare what the store says with what the sensors say; report differences."""
    events = []
    for compartment in model.compartments:
        cid = compartment.compartment_id
        occupancy = model.signals.readings(cid).occupancy
        if occupancy is None or occupancy.value == "unknown":
            continue
        expected = compartment.goods_inside
        seen = occupancy.value == "occupied"
        if expected != seen:
            events.append(PendingEvent(
                "reconcile_mismatch",
                {"stored_goods_inside": expected, "occupancy": occupancy.value,
                 "state": compartment.state.value, "known_before": cid in stored},
                time.time(), cid))
    await sink.emit(events)


def public_keys(settings: Settings) -> dict[str, VerifyKey]:
    """Dispatch's command-signing keys, by key id, as Ed25519 verify keys."""
    return {key_id: verify_key(settings.security.public_key(key_id))
            for key_id in settings.security.dispatch_public_keys}


def default_code_key_file(config_path: Path | None,
                          environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the cabinet's code key lives when ``security.code_key_file`` is not set: in
    the service's state directory under systemd (``STATE_DIRECTORY``, writable by the
    daemon while the config directory is read-only), else beside the config file."""
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "code.key"
    return config_path.parent / "code.key" if config_path is not None else None


def local_file_issues(settings: Settings, config_path: Path | None,
                      environ: Mapping[str, str] | None = None) -> list[str]:
    """What the daemon's start would refuse on this machine's files, found without
    connecting to anything nor creating anything, as ``key: message`` lines: the store's
    socket and password file (:mod:`controller.store.access`, the checks
    :meth:`Store.connect` runs first; a socket or password file that is not there yet is
    left to the start, as in a staged install tree) and the code key, or its directory when
    the key is not made yet (:func:`controller.security.codes.code_key_issue`). The cabinet
    TLS key is checked with the configuration itself
    (:mod:`controller.settings.deployment`)."""
    out: list[str] = []
    url = settings.redis.url
    if url.startswith(("unix://", "redis://", "rediss://")):
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        absent = [v for k, v in query
                  if k == "password_file" and v and not os.path.lexists(v)]
        password: str | None
        try:
            if absent:
                # Not there yet (a staged install tree, a config checked before the
                # installer wrote it): the start reports it; the rest is checked.
                rest = urlencode([(k, v) for k, v in query if k != "password_file"])
                bare, password = urlunsplit(urlsplit(url)._replace(query=rest)), "?"
            else:
                bare, password = resolve_password_file(url)
            check_store_access(bare, production=is_production(settings),
                               has_password=password is not None)
            parse_url(bare, password)  # the client's own reading: query items, port, db
        except StoreConfigError as exc:
            out.append(f"redis.url: {exc.args[0]}")
        except (ValueError, OSError) as exc:
            out.append(f"redis.url: {exc}")
    key = (settings.security.code_key_file or default_code_key_file(config_path, environ)
           or Path("code.key"))
    issue = code_key_issue(Path(key), trusted_owners())
    if issue is not None:
        out.append(f"security.code_key_file: {issue}")
    return out
