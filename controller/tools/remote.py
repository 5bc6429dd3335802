"""``lockerctl status | watch | cmd | commission | code-key``: the dispatch side, over the
broker.

Each command connects a :class:`~controller.dispatch.DispatchClient` for one cabinet,
does one bounded job and disconnects. Expected failures (broker unreachable, TLS files
unreadable, cabinet offline, no reply) are :class:`CliError` one-liners with an exit code,
never a traceback.

Pickup codes (``cmd assign --code``) are sealed only to the cabinet's code key pinned in
the pin file (``code-key pin``, with the key id read on the cabinet), never to the key a
status shows alone (docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from controller.contract.topics import CabinetTopics, InvalidTopic
from controller.dispatch import (
    BrokerError,
    CodeKeyChanged,
    CodeKeyPinError,
    CodeKeyPins,
    DispatchClient,
    PinnedCodeKey,
    Received,
)
from controller.domain.codes import check_issued
from controller.domain.errors import DomainError
from controller.security.errors import KeyFileError
from controller.security.signing import load_private_key
from controller.tools.render import (
    TrafficPrinter,
    describe_command,
    describe_reply,
    state_table,
    status_table,
)

__all__ = [
    "EXIT_CODE_KEY",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "CommissionResult",
    "add_json_option",
    "add_pins_option",
    "add_remote_options",
    "cmd_code_key_pin",
    "cmd_code_key_show",
    "cmd_command",
    "cmd_commission",
    "cmd_status",
    "cmd_watch",
    "parse_broker",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the cabinet refused, a test failed, the cabinet is offline
EXIT_USAGE = 2  # bad arguments, config or key file
EXIT_UNREACHABLE = 3  # broker, bus or cabinet did not answer in time
EXIT_CODE_KEY = 4  # the cabinet's status shows another code key than the pin: an incident

T = TypeVar("T")


class CliError(Exception):
    """An expected failure: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- connection options -------------------------------------------------------------------


def parse_broker(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8883`` for IPv6). The port is required: 1883 (plain) and
    8883 (TLS) are both common, and a guess would fail later with a less clear error."""
    host, sep, port_text = value.rpartition(":")
    if not sep or (host.startswith("[") != host.endswith("]")) or (
            not host.startswith("[") and ":" in host):
        raise argparse.ArgumentTypeError(
            f"broker {value!r}: give the port too, HOST:PORT (e.g. {value}:8883 with TLS, "
            f"{value}:1883 without)")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"broker {value!r}: port is not a number") from None
    if not host or not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"broker {value!r}: expected HOST:PORT")
    return host, port


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker and cabinet")
    group.add_argument("--broker", type=parse_broker, default=("127.0.0.1", 1883),
                       metavar="HOST:PORT",
                       help="the MQTT broker, port required (when the option is left out: "
                            "127.0.0.1:1883)")
    group.add_argument("--site", required=True, help="the cabinet's site, e.g. fr-lyon-07")
    group.add_argument("--cabinet", required=True, help="the cabinet id, e.g. cab-01")
    group.add_argument("--topic-root", default="lockers/v1", help="default lockers/v1")
    group.add_argument("--protocol", type=int, choices=(5, 311), default=5,
                       help="MQTT protocol version (default 5)")
    group.add_argument("--tls-ca", type=Path, metavar="FILE",
                       help="CA of the broker (turns TLS on)")
    group.add_argument("--tls-cert", type=Path, metavar="FILE",
                       help="client certificate (with --tls-key)")
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="client certificate key")
    group.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="how long to wait for the cabinet's status and replies (default 10)")


def add_json_option(parser: argparse.ArgumentParser,
                    text: str = "print the data as JSON instead of tables") -> None:
    parser.add_argument("--json", action="store_true", help=text)


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str), flush=True)


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    try:
        context = ssl.create_default_context(
            cafile=str(args.tls_ca) if args.tls_ca is not None else None)
        if args.tls_cert is not None:
            context.load_cert_chain(str(args.tls_cert), str(args.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"TLS files: {exc}") from None
    return context


def _topics(args: argparse.Namespace) -> CabinetTopics:
    try:
        return CabinetTopics(args.topic_root, args.site, args.cabinet)
    except InvalidTopic as exc:
        raise CliError(str(exc)) from None


def _client(args: argparse.Namespace, *, key: Any = None, key_id: str = "dispatch",
            on_message: Callable[[Received], None] | None = None,
            code_key_pin: PinnedCodeKey | None = None) -> DispatchClient:
    host, port = args.broker
    return DispatchClient(host, port, _topics(args), key=key, key_id=key_id,
                          grant=_load_grant(getattr(args, "grant", None)),
                          protocol=args.protocol, on_message=on_message,
                          tls_context=_tls_context(args), code_key_pin=code_key_pin)


# -- pinned code keys ---------------------------------------------------------------------

#: The environment variable naming the pin file (``--code-key-pins`` wins).
PINS_ENV = "LOCKERCTL_CODE_KEY_PINS"


def default_pins_path() -> Path:
    """``$LOCKERCTL_CODE_KEY_PINS``, else ``code-keys.json`` in lockerctl's configuration
    directory (``$XDG_CONFIG_HOME/lockerctl``, ``~/.config/lockerctl`` by default)."""
    named = os.environ.get(PINS_ENV)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lockerctl" / "code-keys.json"


def add_pins_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--code-key-pins", type=Path, metavar="FILE",
                        help=f"the pinned cabinet code keys (default ${PINS_ENV}, else "
                             "~/.config/lockerctl/code-keys.json)")


def _pins(args: argparse.Namespace) -> CodeKeyPins:
    path = getattr(args, "code_key_pins", None)
    return CodeKeyPins(path if path is not None else default_pins_path())


def _pinned(args: argparse.Namespace) -> PinnedCodeKey:
    """The pin of ``--site/--cabinet``: a usage error (exit 2) when there is none."""
    pins = _pins(args)
    try:
        pin = pins.get(args.site, args.cabinet)
    except CodeKeyPinError as exc:
        raise CliError(str(exc)) from None
    if pin is None:
        raise CliError(
            f"no code key pinned for {args.site}/{args.cabinet} in {pins.path}: codes are "
            "sealed only to a pinned key. Read the key id on the cabinet (locker-controller "
            "--show-code-key), then: lockerctl code-key pin --site ... --cabinet ... "
            "--key-id KEYID; nothing sent")
    return pin


async def _pin_seen(dc: DispatchClient, args: argparse.Namespace, key_id: str,
                    replace: bool) -> tuple[PinnedCodeKey, bool]:
    """Pin the key the cabinet's status shows if its id is ``key_id``."""
    await _status_and_state(dc, args.timeout, args.cabinet)
    try:
        seen = dc.published_code_key()
    except CodeKeyPinError as exc:
        raise CliError(f"cabinet {args.cabinet}: its status shows a malformed code key: {exc}"
                       "; nothing pinned", EXIT_CODE_KEY) from None
    if seen is None:
        raise CliError(f"cabinet {args.cabinet}: its status shows no code key (offline, or "
                       "a version without pickup codes); nothing pinned", EXIT_FAILED)
    try:
        pinned = dc.pin_from_status(key_id)
        changed = _pins(args).pin(args.site, args.cabinet, pinned, replace=replace)
    except CodeKeyChanged as exc:
        raise CliError(f"{exc}; nothing pinned", EXIT_CODE_KEY) from None
    except CodeKeyPinError as exc:
        raise CliError(str(exc)) from None
    return pinned, changed


def cmd_code_key_pin(args: argparse.Namespace, console: Console) -> int:
    """Pin the cabinet's code key, read over the broker, if its id is the one read on the
    cabinet. Exit 0 pinned (or already), 4 another key shown or pinned."""
    async def job() -> tuple[PinnedCodeKey, bool]:
        async with _client(args) as dc:
            return await _pin_seen(dc, args, args.key_id, args.replace)

    pinned, changed = run_bounded(job(), args.timeout + 15, "code-key pin")
    path = _pins(args).path
    if args.json:
        _print_json({"site": args.site, "cabinet": args.cabinet, "key_id": pinned.key_id,
                     "public_key": pinned.public_key_b64, "changed": changed,
                     "file": str(path)})
    else:
        console.print(f"{args.site}/{args.cabinet}: code key {pinned.key_id} "
                      f"{'pinned' if changed else 'already pinned'} in {path}")
    return EXIT_OK


def cmd_code_key_show(args: argparse.Namespace, console: Console) -> int:
    """List the pinned code keys."""
    pins = _pins(args)
    try:
        entries = pins.entries()
    except CodeKeyPinError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        _print_json({"file": str(pins.path), "pins": entries})
        return EXIT_OK
    table = Table(title=f"pinned code keys ({pins.path})")
    for column in ("cabinet", "key id", "pinned at", "public key"):
        table.add_column(column)
    for name, entry in entries.items():
        table.add_row(name, str(entry.get("key_id")), str(entry.get("pinned_at", "-")),
                      str(entry.get("public_key")))
    console.print(table)
    return EXIT_OK


def run_bounded(coro: Awaitable[T], budget_s: float | None, what: str) -> T:
    """Run ``coro`` in a fresh loop, bounded by ``budget_s``; broker failures become
    :class:`CliError` (exit 3)."""
    async def bounded() -> T:
        if budget_s is None:
            return await coro
        return await asyncio.wait_for(coro, budget_s)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        raise CliError(f"{what}: no answer within {budget_s:.0f} s", EXIT_UNREACHABLE) from None
    except BrokerError as exc:
        raise CliError(f"broker: {exc}", EXIT_UNREACHABLE) from None
    except OSError as exc:
        raise CliError(f"broker: {exc.strerror or exc}", EXIT_UNREACHABLE) from None


async def _status_and_state(dc: DispatchClient, timeout_s: float,
                            cabinet: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The retained status (required) and state (if any)."""
    try:
        status = (await dc.wait_for(lambda m: m.channel == "status", timeout_s)).payload
    except TimeoutError:
        raise CliError(f"no status from cabinet {cabinet} within {timeout_s:.0f} s: wrong "
                       "--site/--cabinet, or it never connected to this broker",
                       EXIT_UNREACHABLE) from None
    state: dict[str, Any] | None = None
    try:
        state = (await dc.wait_for(lambda m: m.channel == "state", 1.0)).payload
    except TimeoutError:
        state = None
    return status, state


# -- status and watch ---------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    """Show the retained status and state. Exit 0 online, 1 offline."""
    async def job() -> tuple[dict[str, Any], dict[str, Any] | None]:
        async with _client(args) as dc:
            return await _status_and_state(dc, args.timeout, args.cabinet)

    status, state = run_bounded(job(), args.timeout + 15, "status")
    if args.json:
        _print_json({"status": status, "state": state})
    else:
        console.print(status_table(status, state))
        if state is not None and args.compartments:
            console.print(state_table(state))
    return EXIT_OK if status.get("state") == "online" else EXIT_FAILED


def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    """Print status, state, events, replies and telemetry as they arrive."""
    printer = TrafficPrinter(console, show_retained=not args.no_retained,
                             full=not console.is_terminal)

    def as_json(message: Received) -> None:
        if message.retained and args.no_retained:
            return
        _print_json({"topic": message.topic, "channel": message.channel,
                     "retained": message.retained, "payload": message.payload})

    async def job() -> None:
        async with _client(args, on_message=as_json if args.json else printer):
            if not args.json:
                printer.note("watch", f"{args.topic_root}/{args.site}/{args.cabinet}/# on "
                             f"{args.broker[0]}:{args.broker[1]}"
                             + (f" for {args.duration:g} s" if args.duration else
                                " until Ctrl-C"), "bold cyan")
            if args.duration:
                await asyncio.sleep(args.duration)
            else:
                await asyncio.Event().wait()

    budget = args.duration + 15 if args.duration else None
    run_bounded(job(), budget, "watch")
    return EXIT_OK


# -- commands -----------------------------------------------------------------------------

_DOOR_REASONS = ("deposit", "collect", "staff", "maintenance", "customer_app", "audit")


def command_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The wire ``type`` and ``args`` of a ``lockerctl cmd`` invocation."""
    kind = args.type
    if kind == "open":
        return "open", {"compartment": args.compartment, "reason": args.reason}
    if kind == "assign":
        out: dict[str, Any] = {"order_id": args.order, "size": args.size, "zone": args.zone,
                               "pool": args.pool}
        if args.tenant:
            out["tenant"] = args.tenant
        if args.compartment:
            out["compartment"] = args.compartment
        return "assign", out  # codes are sealed once the cabinet's code key is known
    if kind == "release":
        if (args.compartment is None) == (args.order is None):
            raise CliError("release takes exactly one of --compartment and --order")
        return "release", ({"compartment": args.compartment} if args.compartment
                           else {"order_id": args.order})
    if kind in ("block", "unblock"):
        return kind, {"compartment": args.compartment, "reason": args.reason}
    if kind == "clear-fault":
        return "clear_fault", {"compartment": args.compartment, "reason": args.reason}
    if kind == "get-state":
        return "get_state", {}
    raise CliError(f"unknown command {kind!r}")


def assign_codes(specs: list[str]) -> list[tuple[str, str]]:
    """``--code PURPOSE=CODE`` options as (purpose, normalised code) pairs."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        purpose, sep, code = spec.partition("=")
        if not sep or purpose not in ("deposit", "collect"):
            raise CliError(f"--code takes deposit=CODE or collect=CODE, got {purpose!r}")
        code = "".join(code.split()).replace("-", "").upper()
        try:
            check_issued(code)
        except DomainError as exc:
            raise CliError(f"--code {purpose}: {exc.message}") from None
        out.append((purpose, code))
    if len(out) > 4:
        raise CliError("at most 4 codes per order")
    return out


def add_command_parsers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, metavar="FILE",
                        help="dispatch private key (lockerctl keygen); required except "
                             "for get-state")
    parser.add_argument("--key-id", default="dispatch-1",
                        help="the key's id in the cabinet's dispatch_public_keys")
    parser.add_argument("--grant", type=Path, metavar="FILE",
                        help="a technician key's grant from dispatch (ID.grant.json)")
    parser.add_argument("--ttl", type=float, default=10.0, metavar="S",
                        help="command lifetime in the cabinet's clock (default 10, max 30)")
    add_pins_option(parser)
    sub = parser.add_subparsers(dest="type", required=True, metavar="TYPE")
    p = sub.add_parser("open", help="pulse a compartment's lock")
    p.add_argument("compartment", help="compartment id, e.g. A01")
    p.add_argument("--reason", choices=_DOOR_REASONS, default="staff",
                   help="why it is opened, recorded in the events (default staff)")
    p = sub.add_parser("assign", help="assign a compartment to an order")
    p.add_argument("--order", required=True, help="the order id")
    p.add_argument("--size", required=True, choices=("S", "M", "L", "XL"),
                   help="smallest compartment size that fits")
    p.add_argument("--zone", required=True, help="temperature zone name, e.g. chilled")
    p.add_argument("--pool", required=True, help="tenant pool, e.g. grocery")
    p.add_argument("--tenant", help="the tenant within the pool (carrier, shop)")
    p.add_argument("--compartment", help="pin this compartment")
    p.add_argument("--code", action="append", default=[], metavar="PURPOSE=CODE",
                   help="a deposit or collect code (repeatable, at most 4): 10-15 digits or "
                        "16-64 letters and digits, sealed before sending to the cabinet's "
                        "code key pinned with lockerctl code-key pin")
    p = sub.add_parser("release", help="release an order's compartment")
    p.add_argument("--compartment", help="the compartment to release (or --order)")
    p.add_argument("--order", help="the order whose compartment to release (or --compartment)")
    for name in ("block", "unblock"):
        p = sub.add_parser(name, help=f"{name} a compartment for maintenance")
        p.add_argument("compartment", help="compartment id, e.g. A01")
        p.add_argument("--reason", required=True, help="recorded in the events")
    p = sub.add_parser("clear-fault", help="return a compartment in fault (compartment_fault) "
                                           "to customers once its lock or sensor is repaired")
    p.add_argument("compartment", help="compartment id, e.g. A01")
    p.add_argument("--reason", required=True, help="recorded in the audit (what was repaired)")
    sub.add_parser("get-state", help="ask for the full state (a fresh snapshot)")


def _load_grant(path: Path | None) -> dict[str, str] | None:
    """A technician's grant (``lockerctl keygen --role technician``), sent with each command."""
    if path is None:
        return None
    try:
        grant = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the grant {path}: {exc}") from None
    if not isinstance(grant, dict) or set(grant) != {"signed", "key_id", "sig"}:
        raise CliError(f"{path} is not a grant (signed, key_id, sig)")
    return grant


def _load_key(args: argparse.Namespace, required: bool) -> Any:
    if args.key is None:
        if required:
            raise CliError("--key FILE is required for this command (lockerctl keygen)")
        return None
    try:
        return load_private_key(args.key)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


async def _online(dc: DispatchClient, args: argparse.Namespace) -> dict[str, Any]:
    status, _ = await _status_and_state(dc, args.timeout, args.cabinet)
    if status.get("state") != "online":
        raise CliError(f"cabinet {args.cabinet} is offline (since {status.get('at')}); "
                       "commands are never queued for later", EXIT_FAILED)
    return status


def cmd_command(args: argparse.Namespace, console: Console) -> int:
    """Send one command, signed, and print the reply. Exit 0 ok, 1 refused."""
    type_, cargs = command_args(args)
    key = _load_key(args, required=type_ != "get_state")
    if not 0 < args.ttl <= 30:
        raise CliError("--ttl must be in (0, 30] seconds")
    codes = assign_codes(args.code) if type_ == "assign" and args.code else []
    # Codes are sealed only to the key pinned at commissioning, never to the one a status
    # shows (whoever holds the cabinet's certificate can publish a status).
    pin = _pinned(args) if codes else None

    sent: list[dict[str, Any]] = []

    async def job() -> dict[str, Any]:
        async with _client(args, key=key, key_id=args.key_id, code_key_pin=pin) as dc:
            await _online(dc, args)
            dc.ttl_ms = int(args.ttl * 1000)
            if codes:
                try:
                    cargs["codes"] = dc.seal_codes(args.order, codes)
                except CodeKeyChanged as exc:
                    raise CliError(f"{exc}; nothing sent", EXIT_CODE_KEY) from None
            await dc.ensure_clock(min(5.0, args.timeout / 2))
            command = dc.build(type_, cargs)
            sent.append(command)
            if not args.json:
                console.print(Text("cmd -> ") + describe_command(
                    command, signed=key is not None, full=not console.is_terminal))
            reply = await dc.command(type_, cargs, sign=key is not None,
                                     command_id=command["id"], timeout_s=args.timeout)
            return reply

    try:
        reply = run_bounded(job(), 2 * args.timeout + 15, f"cmd {args.type}")
    except CliError as exc:
        if "no answer" in str(exc):
            raise CliError(f"no reply from cabinet {args.cabinet} within the timeout; the "
                           "command may still act: repeat it with the same id to learn the "
                           "outcome", EXIT_UNREACHABLE) from None
        raise
    if args.json:
        _print_json({"command": sent[0] if sent else None, "signed": key is not None,
                     "reply": reply})
        return EXIT_OK if reply.get("ok") else EXIT_FAILED
    console.print(Text("reply <- ") + describe_reply(reply, full=not console.is_terminal))
    result = reply.get("result")
    if reply.get("ok") and isinstance(result, dict) and "compartments" in result:
        console.print(state_table(result))
    return EXIT_OK if reply.get("ok") else EXIT_FAILED


# -- commissioning ------------------------------------------------------------------------


@dataclass
class CommissionResult:
    compartment: str
    outcome: str  # pass | fail | skipped
    detail: str = ""
    opened_after_s: float | None = None
    open_s: float | None = None


class _SimHand:
    """In tests: the technician's hand, through the simulator's control channel."""

    def __init__(self, port: int) -> None:
        from controller.lab.rig import SimControl

        self.control = SimControl(port)

    async def hold(self, compartment: str) -> None:
        await asyncio.wait_for(self.control.acall("pull_when_released", compartment=compartment),
                               10)

    async def let_go(self, compartment: str) -> None:
        await asyncio.wait_for(self.control.acall("pull_when_released",
                                                  compartment=compartment, wait=False), 10)

    async def close(self, compartment: str) -> None:
        await asyncio.wait_for(self.control.acall("close", compartment=compartment), 10)


async def commission(dc: DispatchClient, compartments: list[dict[str, Any]], *,
                     open_timeout_s: float, close_timeout_s: float, hand: _SimHand | None,
                     say: Callable[[str], None],
                     advance: Callable[[str], None]) -> list[CommissionResult]:
    """Test each door in order: signed open (maintenance), door_opened or
    open_not_detected, the door closed again (by the technician, or ``hand``)."""
    results: list[CommissionResult] = []
    for c in compartments:
        cid = str(c["id"])
        advance(cid)
        if c.get("state") in ("assigned", "loaded", "expired"):
            results.append(CommissionResult(cid, "skipped", f"{c.get('state')}: holds an order"))
            continue
        if c.get("door") is None:
            results.append(CommissionResult(cid, "skipped", "no door sensor: check by eye"))
            continue
        if hand is not None:
            await hand.hold(cid)
        else:
            say(f"[bold]{cid}[/]: stand by the door, it is about to unlock")
        start = len(dc.messages)
        reply = await dc.command("open", {"compartment": cid, "reason": "maintenance"},
                                 timeout_s=open_timeout_s)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            results.append(CommissionResult(cid, "fail", f"refused: {error.get('code')}: "
                                            f"{error.get('message')}"))
            if hand is not None:
                await hand.let_go(cid)
            continue

        def door(kinds: tuple[str, ...], cid: str = cid) -> Callable[[Received], bool]:
            return lambda m: (m.channel == "events" and m.payload.get("compartment") == cid
                              and m.payload.get("kind") in kinds)
        try:
            event = (await dc.wait_for(door(("door_opened", "open_not_detected")),
                                       open_timeout_s, start=start)).payload
        except TimeoutError:
            results.append(CommissionResult(cid, "fail", f"no door event within "
                                            f"{open_timeout_s:g} s"))
            if hand is not None:
                await hand.let_go(cid)
            continue
        if event.get("kind") == "open_not_detected":
            results.append(CommissionResult(cid, "fail", "open_not_detected: pulse sent, door "
                                            "did not open (latch, solenoid, wiring or sensor)"))
            if hand is not None:
                await hand.let_go(cid)
            continue
        opened_after = (event.get("data") or {}).get("after_pulse_s")
        if hand is not None:
            await asyncio.sleep(0.3)  # the simulated hand holds the door a moment
            await hand.close(cid)
        else:
            say(f"[bold]{cid}[/] is open: close it now")
        try:
            closed = (await dc.wait_for(door(("door_closed",)), close_timeout_s,
                                        start=start)).payload
        except TimeoutError:
            results.append(CommissionResult(cid, "fail", f"opened, but not closed within "
                                            f"{close_timeout_s:g} s", opened_after))
            continue
        results.append(CommissionResult(cid, "pass", "opened and closed", opened_after,
                                        (closed.get("data") or {}).get("open_s")))
    return results


def commission_table(results: list[CommissionResult]) -> Table:
    table = Table(title="commissioning")
    for column in ("compartment", "result", "opened after", "open for", "detail"):
        table.add_column(column)
    style = {"pass": "bold green", "fail": "bold red", "skipped": "yellow"}
    for r in results:
        table.add_row(r.compartment, Text(r.outcome.upper(), style=style[r.outcome]),
                      f"{r.opened_after_s:.2f} s" if r.opened_after_s is not None else "-",
                      f"{r.open_s:.1f} s" if r.open_s is not None else "-", r.detail)
    return table


def cmd_commission(args: argparse.Namespace, console: Console) -> int:
    """Door-by-door commissioning test. Exit 0 when no door failed."""
    key = _load_key(args, required=True)
    wanted = [c.strip() for c in args.compartments.split(",")] if args.compartments else None
    hand = _SimHand(args.auto_close_sim) if args.auto_close_sim else None

    async def job() -> list[CommissionResult]:
        async with _client(args, key=key, key_id=args.key_id) as dc:
            await _online(dc, args)
            if args.code_key_id:
                pinned, changed = await _pin_seen(dc, args, args.code_key_id, replace=False)
                say = Console(stderr=True) if args.json else console
                say.print(f"code key {pinned.key_id} "
                          f"{'pinned' if changed else 'already pinned'} for "
                          f"{args.site}/{args.cabinet}")
            reply = await dc.command("get_state", {}, sign=True, timeout_s=args.timeout)
            if not reply.get("ok"):
                error = reply.get("error") or {}
                raise CliError(f"get_state refused: {error.get('code')}: {error.get('message')}",
                               EXIT_FAILED)
            compartments = list((reply.get("result") or {}).get("compartments") or [])
            if wanted is not None:
                known = {str(c["id"]) for c in compartments}
                unknown = [c for c in wanted if c not in known]
                if unknown:
                    raise CliError(f"no such compartment(s): {', '.join(unknown)}")
                compartments = [c for c in compartments if c["id"] in wanted]
            with Progress(TextColumn("[bold]commissioning[/] {task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(),
                          console=Console(stderr=True) if args.json else console,
                          transient=False) as progress:
                task = progress.add_task("", total=len(compartments))
                seen = 0

                def advance(cid: str) -> None:
                    nonlocal seen
                    progress.update(task, completed=seen, description=cid)
                    seen += 1

                results = await commission(
                    dc, compartments, open_timeout_s=args.open_timeout,
                    close_timeout_s=args.close_timeout, hand=hand,
                    say=lambda text: progress.console.print(text), advance=advance)
                progress.update(task, completed=len(compartments), description="done")
            return results

    started = time.monotonic()
    # No overall budget: each step is bounded (status, replies: --timeout; door opened:
    # --open-timeout; door closed: --close-timeout; simulator calls: 10 s) and there are
    # as many steps as compartments.
    results = run_bounded(job(), None, "commission")
    failed = [r for r in results if r.outcome == "fail"]
    if args.json:
        _print_json({"results": [vars(r) for r in results],
                     "passed": sum(r.outcome == "pass" for r in results),
                     "failed": len(failed),
                     "skipped": sum(r.outcome == "skipped" for r in results),
                     "duration_s": round(time.monotonic() - started, 3)})
        return EXIT_FAILED if failed else EXIT_OK
    console.print(commission_table(results))
    console.print(Text(f"{sum(r.outcome == 'pass' for r in results)} passed, {len(failed)} "
                       f"failed, {sum(r.outcome == 'skipped' for r in results)} skipped in "
                       f"{time.monotonic() - started:.1f} s",
                       style="bold red" if failed else "bold green"))
    return EXIT_FAILED if failed else EXIT_OK
