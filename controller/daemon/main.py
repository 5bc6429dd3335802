"""``locker-controller``: the command line: read the configuration (exit 2 on an error that
names the key), run the :class:`~controller.daemon.Daemon` under signal handlers and the
shutdown deadline, and restart when dispatch applied a configuration."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.daemon.app import STOP_DEADLINE_S, Daemon
from controller.daemon.startup import local_file_issues
from controller.logs import setup_logging, to_stderr
from controller.restart import EXIT_STOP_TIMEOUT, ShutdownDeadline, restart_mode, restart_now
from controller.security.codes import CodeKeyError
from controller.settings import ConfigError, load_settings
from controller.store.errors import StoreConfigError, StoreError

__all__ = ["main"]

log = logging.getLogger("controller.daemon")


def _parse_set(values: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


#: The Python library each hardware GPIO backend needs (the rpi extra installs rpi-lgpio,
#: which provides ``RPi.GPIO``).
GPIO_LIBRARIES = {"gpiod": ("gpiod", "gpiod"), "rpigpio": ("RPi", "rpi")}


def missing_gpio_library(backend: str) -> str | None:
    """What to tell the technician when ``lane.backend`` names a GPIO library that is not
    installed (the config is valid, the cabinet would still start without its lane)."""
    library = GPIO_LIBRARIES.get(backend)
    if library is None or importlib.util.find_spec(library[0]) is not None:
        return None
    return (f"lane.backend: {backend!r} needs the Python library {library[0]!r}, which is "
            f"not installed here: install with deploy/install.sh --gpio {library[1]}, or "
            "set lane.backend to the library that is")


def show_code_key(configured: Path | None, config_path: Path) -> int:
    """``--show-code-key``: the key id and public key of the cabinet's code key file, read
    as the daemon would find it (``security.code_key_file``, else the service's state
    directory, else beside the config). The technician reads the id out of band to
    dispatch, which pins it (``lockerctl code-key pin``). Creates nothing: exit 2 when the
    file is not there or unusable."""
    from controller.daemon.startup import default_code_key_file
    from controller.security.codes import CodeKey

    path = configured or default_code_key_file(config_path)
    if path is None:
        to_stderr("code key: no code key file configured")
        return 2
    try:
        key = CodeKey.from_json(path.read_text(), str(path))
    except FileNotFoundError:
        to_stderr(f"code key: {path} does not exist: the daemon creates it at its first "
                  "start (under systemd it is in the service's state directory, "
                  "/var/lib/locker: run with STATE_DIRECTORY=/var/lib/locker, as the "
                  "daemon's user)")
        return 2
    except OSError as exc:
        to_stderr(f"code key: {path}: cannot read: {exc.strerror} (run as the daemon's user)")
        return 2
    except CodeKeyError as exc:
        to_stderr(f"code key: {exc}")
        return 2
    published = key.published()
    print(f"code key file: {path}")
    print(f"key_id:        {published['key_id']}")
    print(f"public_key:    {published['public_key']}")
    print(f"scheme:        {published['scheme']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="locker-controller", description="The locker cabinet controller daemon.")
    parser.add_argument("--config", default=os.environ.get("LOCKER_CONFIG"),
                        help="cabinet TOML file (default: $LOCKER_CONFIG)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set mqtt.port=1884 (repeatable)")
    parser.add_argument("--backend", default="modbus",
                        help="board backend: modbus (default) or fake")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration and the files the start checks "
                        "(store socket and password file, code key, TLS key), then exit")
    parser.add_argument("--show-code-key", action="store_true",
                        help="print the id and public key of the cabinet's code key (what "
                             "dispatch pins at commissioning) and exit; creates nothing")
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("--config FILE is required (or set LOCKER_CONFIG)")
    try:
        flags = _parse_set(args.set)
        settings = load_settings(Path(args.config), overrides=flags)
    except ConfigError as exc:
        to_stderr(f"configuration error:\n{exc}")  # at error priority in the journal
        return 2
    if args.show_code_key:
        return show_code_key(settings.security.code_key_file, Path(args.config))
    if args.check:
        # The start's own checks of this machine's files (those that need no network):
        # what the start would refuse, the check refuses.
        problems = local_file_issues(settings, Path(args.config))
        missing = missing_gpio_library(settings.lane.backend)
        if missing is not None:
            problems.append(missing)
        if problems:
            to_stderr("configuration error:\n" + "\n".join(
                f"{args.config}: {problem}" for problem in problems))
            return 2
        print(f"{args.config}: ok (hash {settings.config_hash[:12]})")
        return 0
    setup_logging(settings.log.level, settings.log.format,
                  timezone=settings.cabinet.timezone)
    mode = restart_mode()
    daemon: Daemon

    def deadline_passed() -> None:
        # The graceful stop hung (a task that ignores cancellation, a stuck close, a
        # blocked loop): restart anyway if one was asked for, else end.
        if daemon.restart_requested:
            restart_now(mode)
        os._exit(EXIT_STOP_TIMEOUT)

    deadline = ShutdownDeadline(STOP_DEADLINE_S, deadline_passed)
    daemon = Daemon(settings, backend=args.backend, config_path=Path(args.config), flags=flags,
                    on_stop=deadline.arm)

    async def runner() -> int:
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if daemon.stopping and not daemon.restart_requested:
                log.warning("second stop signal: ending now")
                deadline.expire()
            daemon.terminate()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await daemon.run()
        finally:
            # Until the process is gone, a signal still ends it (never ignored).
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        code = asyncio.run(runner())
    except StoreConfigError as exc:
        # Not a passing outage: a store others can write, or a bad URL. Fix, then start.
        to_stderr(f"store refused at start-up: {exc}")
        return 2
    except StoreError as exc:
        log.critical("store unavailable at start-up", extra={"ctx": {"error": str(exc)}})
        return 3
    except CodeKeyError as exc:
        log.critical("code key unusable", extra={"ctx": {"error": str(exc)}})
        print(f"code key error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        config_errors = group.subgroup(ConfigError)
        if config_errors is None:
            raise
        print(f"configuration error:\n{config_errors.exceptions[0]}", file=sys.stderr)
        return 2
    if daemon.restart_requested:
        log.info("restarting now", extra={"ctx": {"mode": mode, "boot": daemon.boot_id}})
        restart_now(mode)
    return code
