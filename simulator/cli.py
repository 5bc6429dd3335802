"""``locker-sim``: run a simulated cabinet, or act on a running one.

::

    locker-sim run --config deploy/sim-cabinet.toml [--no-timing] [--control-port N]
                   [--link-dir DIR | --no-links] [--lane-port N] [--json]
    locker-sim ctl --port N pull A01
    locker-sim ctl --port N fault-set silent --board locks-a
    locker-sim ctl --port N raw '{"op": "state"}'
    locker-sim fleet --cabinets 200 [--json]

``run`` serves every bus of the config (RTU on a pty, symlinked at the configured port
path or in ``--link-dir``; Modbus TCP on a loopback port) and the control channel, prints
where, and runs until SIGTERM or SIGINT; then it closes everything and removes its
symlinks. With ``--json`` the "ready" report is one JSON line on stdout (for scripts).
``--lane-port`` also serves the lane I/O world (:mod:`simulator.lane`, protocol
``lane-io/1``); so does a config whose ``[lane]`` has ``backend = "simulator"`` and
``options.port``. A ``[lane.scanner] port`` (or ``--scanner-link``) serves a serial code
scanner on a pty linked there. The control channel then acts on the lane too
(``scan``, ``vehicle_arrive``, ``help_press``, ``tamper_open``, ``mains_lose``, ...).

``fleet`` runs many cabinets against one broker with dispatch's scenario and report. The
cabinets run the real daemon, so the fleet lives with the controller (``controller.lab.
fleet``, which the simulator never imports): this starts it as a separate process, with
the same Python, and passes every option on (``locker-sim fleet --help`` lists them).

``ctl`` sends one request to the control channel (see :mod:`simulator.control`) and
prints the reply; exit status 0 when the reply is ok, 1 when it is an error, 2 when the
simulator cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from simulator.cabinet import SimCabinet
from simulator.control import LANE_OPS, send_command
from simulator.errors import SimError
from simulator.faults import FAULT_KINDS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="locker-sim", description="Simulated locker cabinet.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a simulated cabinet until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="the cabinet TOML file")
    run.add_argument("--no-timing", action="store_true", help="no line timing: reply at once")
    run.add_argument("--control-port", type=int, default=0, help="control channel port (0: any)")
    links = run.add_mutually_exclusive_group()
    links.add_argument(
        "--link-dir", help="put the serial symlinks here, not at the configured paths"
    )
    links.add_argument("--no-links", action="store_true", help="make no serial symlinks")
    run.add_argument(
        "--lane-port", type=int, default=None, help="also serve lane I/O on this port (0: any)"
    )
    run.add_argument(
        "--scanner-link", default=None, help="serve a code scanner on a pty linked here"
    )
    run.add_argument("--json", action="store_true", help="print the ready report as one JSON line")
    run.add_argument("--log-level", default="WARNING")

    # Options pass through to the fleet's own parser (its --help lists them).
    sub.add_parser("fleet", add_help=False,
                   help="N simulated cabinets (the real daemon) against one broker, "
                   "driven by a dispatch scenario, with a report")

    ctl = sub.add_parser("ctl", help="send a command to a running simulator")
    ctl.add_argument("--port", type=int, required=True, help="the control channel port")
    ctl.add_argument("--host", default="127.0.0.1")
    ops = ctl.add_subparsers(dest="op", required=True)
    for op in ("ping", "state", "endpoints", "faults", "stats"):
        ops.add_parser(op)
    for op, help_ in (
        ("pull", "pull the door handle once"),
        ("pull-when-released", "hold the handle: open as soon as the latch releases"),
        ("force-open", "open the door whatever the latch"),
        ("close", "push the door shut"),
        ("place", "put a parcel in (door open)"),
        ("remove", "take a parcel out (door open)"),
    ):
        ops.add_parser(op, help=help_).add_argument("compartment")
    temp = ops.add_parser("temp", help="set a zone's temperature")
    temp.add_argument("zone")
    temp.add_argument("value_c", type=float)
    fset = ops.add_parser("fault-set", help="activate a fault")
    fset.add_argument("kind", choices=FAULT_KINDS)
    fclear = ops.add_parser("fault-clear", help="clear faults (all with no argument)")
    fclear.add_argument("kind", nargs="?", choices=FAULT_KINDS)
    for p in (fset, fclear):
        p.add_argument("--board")
        p.add_argument("--channel", type=int)
        p.add_argument("--compartment")
        p.add_argument("--signal", choices=("door", "latch", "occupancy"))
        p.add_argument("--zone")
    fset.add_argument("--latency", type=float, dest="latency_s")
    fset.add_argument("--delay", type=float, dest="delay_s", help="late: seconds late")
    fset.add_argument("--writes-only", action="store_true", default=None,
                      help="late: only the replies to writes")
    fset.add_argument("--count", type=int,
                      help="late and the reply faults: spoil this many replies, then clear")
    fset.add_argument("--period", type=float, dest="period_s")
    fset.add_argument("--level", type=int, choices=(0, 1))
    fset.add_argument("--code", type=int, help="busy: the Modbus exception code (default 6)")
    ops.add_parser("scan", help="show a code to the lane's scanner").add_argument("code")
    for op, help_ in LANE_OPS.items():
        ops.add_parser(op.replace("_", "-"), help=help_)
    ops.add_parser("lane", help="the lane's inputs, light and buzzer")
    truth = ops.add_parser("truth", help="the ground-truth log")
    truth.add_argument("--kind")
    truth.add_argument("--compartment")
    truth.add_argument("--limit", type=int, default=50)
    raw = ops.add_parser("raw", help="send a JSON request as is")
    raw.add_argument("json")
    return parser


def _request(args: argparse.Namespace) -> dict[str, Any]:
    op: str = args.op
    if op == "raw":
        request: dict[str, Any] = json.loads(args.json)
        return request
    names = {
        "pull-when-released": "pull_when_released",
        "force-open": "force_open",
        "place": "place_parcel",
        "remove": "remove_parcel",
        "temp": "set_temperature",
        "fault-set": "fault_set",
        "fault-clear": "fault_clear",
    }
    request = {"op": names.get(op, op)}
    if op.replace("-", "_") in LANE_OPS:
        request["op"] = op.replace("-", "_")
    for name in (
        "code",
        "compartment",
        "zone",
        "value_c",
        "kind",
        "board",
        "channel",
        "signal",
        "latency_s",
        "delay_s",
        "writes_only",
        "count",
        "period_s",
        "code",
        "limit",
    ):
        value = getattr(args, name, None)
        if value is not None:
            request[name] = value
    if getattr(args, "level", None) is not None:
        request["level"] = bool(args.level)
    return request


def _ctl(args: argparse.Namespace) -> int:
    out, err = Console(), Console(stderr=True)
    try:
        request = _request(args)
    except ValueError as exc:
        err.print(f"[red]bad JSON:[/red] {exc}")
        return 2
    try:
        reply = send_command(args.port, request, host=args.host)
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot reach the simulator on {args.host}:{args.port}:[/red] {exc}")
        return 2
    if reply.get("ok"):
        out.print_json(data=reply.get("result", {}))
        return 0
    err.print_json(data=reply.get("error", reply))
    return 1


def _ready_table(cab: SimCabinet, lane_port: int | None) -> Table:
    table = Table(title=f"locker-sim: {cab.config.site}/{cab.config.cabinet_id}")
    for column in ("bus", "baud", "RTU (pty)", "link", "Modbus TCP", "boards"):
        table.add_column(column, overflow="fold")
    for ep in cab.endpoints():
        boards = ", ".join(f"{b['name']}@{b['address']}" for b in ep["boards"])
        table.add_row(
            ep["bus"],
            str(ep["baudrate"]),
            ep["serial_path"],
            ep["link"] or "-",
            f"127.0.0.1:{ep['tcp_port']}",
            boards,
        )
    table.caption = f"control 127.0.0.1:{cab.control_port}" + (
        f"   lane I/O 127.0.0.1:{lane_port}" if lane_port is not None else ""
    ) + (f"   scanner {cab.scanner_path}" if cab.scanner_path is not None else "")
    return table


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            cab = SimCabinet.from_file(
                args.config,
                emulate_timing=not args.no_timing,
                link_dir=args.link_dir,
                make_links=not args.no_links,
                control_port=args.control_port,
                lane_port=args.lane_port,
                scanner_link=args.scanner_link,
            )
            await stack.enter_async_context(cab)
            lane_port = cab.lane_port
            if args.json:
                report = {
                    "ready": True,
                    "control_port": cab.control_port,
                    "lane_port": lane_port,
                    "scanner": cab.scanner_path,
                    "buses": cab.endpoints(),
                }
                print(json.dumps(report), flush=True)
            else:
                Console().print(_ready_table(cab, lane_port))
            await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


FLEET_MODULE = "controller.lab.fleet"


def _fleet(options: Sequence[str], module: str = FLEET_MODULE) -> int:
    """Run the fleet (part of the controller package) as a child process."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        Console(stderr=True).print(
            "[red]locker-sim fleet:[/red] the fleet runs the cabinet controller, which is not "
            "installed in this Python environment: install the locker-controller package "
            "(pip install locker-controller[sim]) and try again")
        return 2
    # Its own session: Ctrl-C reaches this process only, which passes it on once and waits
    # for the fleet to stop its broker, store and hosts (a second Ctrl-C kills it). SIGTERM
    # (a service manager, `kill`) is passed on the same way.
    terminated = False

    def on_sigterm(_sig: int, _frame: object) -> None:
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        child = subprocess.Popen([sys.executable, "-m", module, "run", *options],
                                 start_new_session=True)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=180)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                child.kill()
                child.wait()
            return 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "fleet":
        return _fleet(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "ctl":
        return _ctl(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        return asyncio.run(_serve(args))
    except SimError as exc:
        Console(stderr=True).print(f"[red]locker-sim:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
