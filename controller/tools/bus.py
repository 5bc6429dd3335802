"""``lockerctl bus scan | set-address``: find and re-address boards on one RS-485 line.

The line is opened through the board backend named ``modbus`` (imported lazily by
:func:`drivers.registry.load_backend`, so a machine without pymodbus/pyserial gets a
clear error, not an import crash), and the scan and addressing procedures come from
:mod:`drivers.modbus.scan`. The daemon owns the line while it runs: stop it first
(``systemctl stop locker-controller``); the serial port is opened exclusively, so a
running daemon makes this a clear "port busy" error rather than a garbled line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from controller.settings import ConfigError, Settings, load_settings
from controller.tools.remote import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError

__all__ = ["cmd_bus_scan", "cmd_bus_set_address"]

_BUS_KEYS = ("name", "kind", "port", "baudrate", "parity", "stopbits", "bytesize", "host",
             "tcp_port", "timeout_s", "retries")


def _settings(path: Path) -> Settings:
    try:
        return load_settings(path, check_files=False)
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}".replace("\n", "; ")) from None


def _bus_table(settings: Settings, name: str) -> Mapping[str, Any]:
    try:
        bus = settings.bus(name)
    except KeyError:
        known = ", ".join(b.name for b in settings.buses) or "none"
        raise CliError(f"no bus {name!r} in the configuration (buses: {known})") from None
    raw = msgspec.structs.asdict(bus)
    return {k: raw[k] for k in _BUS_KEYS if raw.get(k) is not None}


def _open_line(settings: Settings, name: str) -> Any:
    from drivers.errors import BackendUnavailable, DriverConfigError
    from drivers.registry import load_backend

    try:
        backend = load_backend("modbus")
        return backend.open_bus(_bus_table(settings, name))
    except BackendUnavailable as exc:
        raise CliError(str(exc)) from None
    except DriverConfigError as exc:
        raise CliError(f"bus {name}: {exc}") from None


async def _connect(line: Any, name: str) -> None:
    from drivers.errors import BusError

    try:
        await asyncio.wait_for(line.connect(), 15)
    except BusError as exc:
        raise CliError(f"bus {name}: cannot open the line: {exc} (is the daemon running? "
                       "stop it first)", EXIT_UNREACHABLE) from None
    except TimeoutError:
        raise CliError(f"bus {name}: the line did not open within 15 s",
                       EXIT_UNREACHABLE) from None


def cmd_bus_scan(args: argparse.Namespace, console: Console) -> int:
    """Probe units ``--from``..``--to``; compare with the boards the config puts there.

    Exit 0 when every configured board in the range answered cleanly and nothing else
    looks wrong; 1 when one is missing or a reply was garbled (two boards at one
    address)."""
    from drivers.modbus.registers import MAX_UNIT

    if not 1 <= args.first <= args.last <= MAX_UNIT:
        raise CliError(f"--from/--to must satisfy 1 <= from <= to <= {MAX_UNIT}")
    settings = _settings(args.config)
    configured = {b.address: b for b in settings.boards if b.bus == args.bus}
    line = _open_line(settings, args.bus)
    units = range(args.first, args.last + 1)
    # A scan takes about len(units) * (timeout + settle): bounded, and capped below.
    cap_s = len(units) * (args.unit_timeout + 0.25) + 10

    async def job() -> list[Any]:
        from drivers.modbus.scan import scan

        await _connect(line, args.bus)
        try:
            with Progress(TextColumn("[bold]scan {task.fields[bus]}[/] unit {task.description}"),
                          BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=Console(stderr=True) if args.json else console) as progress:
                task = progress.add_task(str(args.first), total=len(units), bus=args.bus)

                def on_unit(unit: int) -> None:
                    progress.update(task, completed=unit - args.first, description=str(unit))

                hits = await scan(line, units, timeout_s=args.unit_timeout,
                                  max_duration_s=cap_s, progress=on_unit)
                progress.update(task, completed=len(units), description="done")
                return hits
        finally:
            await line.close()

    try:
        hits = asyncio.run(asyncio.wait_for(job(), cap_s + 20))
    except TimeoutError:
        raise CliError(f"scan of {args.bus} did not finish within {cap_s + 20:.0f} s",
                       EXIT_UNREACHABLE) from None

    table = Table(title=f"bus {args.bus}: units {args.first}..{args.last}")
    for column in ("address", "answer", "firmware", "configured board", "note"):
        table.add_column(column)
    problems = 0
    rows: list[dict[str, Any]] = []
    found = {hit.address: hit for hit in hits}
    for address in sorted(set(found) | {a for a in configured if a in units}):
        hit = found.get(address)
        board = configured.get(address)
        name = f"{board.name} ({board.profile})" if board is not None else "-"
        if hit is None:
            problems += 1
            note = "configured but did not answer: power, wiring, address, baud rate"
            rows.append({"address": address, "answer": "silent", "firmware": None,
                         "board": board.name if board is not None else None, "note": note})
            table.add_row(str(address), Text("silent", style="bold red"), "-", name, note)
            continue
        note = ""
        style = "green"
        if hit.kind == "garbled":
            problems += 1
            style = "bold red"
            note = "garbled reply: two boards at this address? connect one at a time"
        elif board is None:
            style = "yellow"
            note = "not in the configuration (a new board still at its factory address?)"
        elif hit.kind == "other":
            note = "answered with an exception: not a Waveshare board (normal for IO/probes)"
        rows.append({"address": address, "answer": hit.kind, "firmware": hit.firmware,
                     "board": board.name if board is not None else None,
                     "note": note or hit.detail})
        table.add_row(str(address), Text(hit.kind, style=style), hit.firmware or "-", name,
                      note or hit.detail)
    if args.json:
        print(json.dumps({"bus": args.bus, "from": args.first, "to": args.last,
                          "units": rows, "answered": len(hits), "problems": problems}))
        return EXIT_FAILED if problems else EXIT_OK
    console.print(table)
    console.print(f"{len(hits)} unit(s) answered, {problems} problem(s)")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_bus_set_address(args: argparse.Namespace, console: Console) -> int:
    """Write a new address to a Waveshare-style board and verify it. Exit 0 verified."""
    from drivers.modbus.registers import MAX_UNIT

    if not 0 <= args.current <= MAX_UNIT or not 1 <= args.new <= MAX_UNIT:
        raise CliError(f"--from must be 0..{MAX_UNIT} (0 = broadcast) and --to 1..{MAX_UNIT}")
    if args.current == 0 and not args.only_board_on_line:
        raise CliError("--from 0 broadcasts: every board on the line takes the new address. "
                       "Disconnect the others and add --only-board-on-line", EXIT_USAGE)
    settings = _settings(args.config)
    line = _open_line(settings, args.bus)

    async def job() -> Any:
        from drivers.errors import BoardError, BoardRejected
        from drivers.modbus.scan import set_address

        await _connect(line, args.bus)
        try:
            return await set_address(line, args.current, args.new,
                                     only_board_on_line=args.only_board_on_line)
        except BoardRejected as exc:
            raise CliError(f"the board at address {args.current} refused the change: {exc}",
                           EXIT_FAILED) from None
        except BoardError as exc:
            raise CliError(f"no board answered at address {args.new} after the change: {exc}",
                           EXIT_UNREACHABLE) from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
        finally:
            await line.close()

    try:
        change = asyncio.run(asyncio.wait_for(job(), 30))
    except TimeoutError:
        raise CliError("set-address did not finish within 30 s", EXIT_UNREACHABLE) from None
    if change.verified:
        console.print(Text(f"board {change.old} -> {change.new}: verified", style="bold green")
                      + Text(f" ({change.detail})" if change.detail else "", style="dim"))
        clash = [b.name for b in settings.boards
                 if b.bus == args.bus and b.address == change.new]
        if clash:
            console.print(f"the configuration expects {', '.join(clash)} at {change.new}")
        return EXIT_OK
    console.print(Text(f"board {change.old} -> {change.new}: NOT verified: {change.detail}",
                       style="bold red"))
    return EXIT_FAILED
