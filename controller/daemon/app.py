"""The daemon: start-up, the task group, graceful shutdown. The composition root: it
builds every part from the settings and runs them.

Start-up, in order (each step must succeed before the next):

1. settings loaded and validated (errors name the key and the file; exit 2);
2. the store (Redis) opened, a new boot recorded (boot id, boot counter);
3. the boards built from the config through the backend named on the command line
   (default ``modbus``, imported lazily); *all outputs off*, board by board;
4. stored compartment state loaded; commands a crash interrupted are answered (never
   re-executed: a compartment whose pulse intent was recorded is not pulsed again);
5. one poll of every board, so the first state reflects the sensors; differences with
   the stored state are reported as events (reconciliation);
6. the MQTT link started (it connects in the background: the cabinet works offline);
7. ``READY=1`` to systemd once the link is up, or after ``ready_timeout_s`` without it
   (the cabinet must serve its lane with the broker down), with the reason in STATUS.

Then the tasks run until SIGTERM/SIGINT: poller, ticker, outbox pump, state publisher,
telemetry, command loop, watchdog, lane, zones, each supervised (a failure is logged,
counted in telemetry ``task_restarts`` and the task restarted with backoff; only a
configuration error ends the daemon). Shutdown: stop the tasks, outputs off, publish
``offline`` and disconnect, close the store and the lines, all within
:data:`STOP_DEADLINE_S` (else the process is ended anyway, see :mod:`controller.restart`).
An accepted ``apply_config`` restarts the daemon after that shutdown: exit code 75 under
systemd, re-exec in place in a foreground run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from controller import __version__
from controller.clock import CabinetClock
from controller.contract.errors import CommandRejected, ErrorCode
from controller.contract.messages import (
    ApplyConfigCommand,
    ClockReading,
    Reply,
    State,
    Status,
    Telemetry,
    encode,
    to_builtins,
)
from controller.contract.topics import CabinetTopics
from controller.daemon.messages import state_message, status_message, telemetry_message
from controller.daemon.startup import (
    InterruptedReply,
    answer_interrupted,
    default_code_key_file,
    load_overlay,
    public_keys,
    reconcile,
)
from controller.domain.cabinet_model import CabinetModel, Now
from controller.domain.unlock import UnlockPolicy
from controller.health import HEALTH_EVERY_S, HealthStatus
from controller.mqtt.link import (
    IncomingCommand,
    LinkDown,
    MqttLink,
    MqttLinkError,
    MqttLinkSettings,
)
from controller.security.grants import RevocationList
from controller.security.replay import MemoryReplayStore
from controller.security.verify import CommandVerifier
from controller.services.commands import CommandService
from controller.services.config import OverlayRejected, merge, settings_with_overlay
from controller.services.hardware import Hardware
from controller.services.lane import LaneService
from controller.services.poller import Poller
from controller.services.reporting import (
    EventSink,
    OutboxPump,
    PendingEvent,
    StateKeeper,
    StatePublisher,
)
from controller.services.setup import compartment_setups, signal_filtering, unlock_limits
from controller.services.storewatch import StoreWatch
from controller.services.supervisor import TaskSupervisor
from controller.services.takeover import TakeoverWatch
from controller.services.unlock import UnlockService
from controller.services.zones import ZoneMonitor
from controller.settings import ConfigError, Settings
from controller.settings.deployment import is_production
from controller.store import Store
from controller.store.errors import StoreError
from controller.store.records import Event, ReplyTarget
from controller.strictjson import recover_id
from controller.systemd import Notifier

__all__ = ["REPLIES_IN_FLIGHT", "STOP_DEADLINE_S", "Daemon"]

log = logging.getLogger("controller.daemon")

#: The longest a stop (SIGTERM or a restart) may take before the process is ended anyway;
#: below the unit's TimeoutStopSec (15 s).
STOP_DEADLINE_S = 10.0
#: Replies waiting for their PUBACK while the next command is handled.
REPLIES_IN_FLIGHT = 32

class Daemon:
    """One cabinet's controller. ``await Daemon(settings).run()`` until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        backend: str = "modbus",
        notifier: Notifier | None = None,
        ready_timeout_s: float = 20.0,
        config_path: Path | None = None,
        flags: dict[str, Any] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_stop = on_stop
        self.config_path = config_path
        self.flags = dict(flags or {})
        self.restart_requested = False
        self.backend = backend
        self.notifier = notifier or Notifier()
        self.ready_timeout_s = ready_timeout_s
        self._stop = asyncio.Event()
        self._start_mono = time.monotonic()
        self.boot_id = ""
        self.ready = asyncio.Event()
        self._state_revision = 0
        self.store: Store | None = None
        self.hardware: Hardware | None = None
        self.link: MqttLink | None = None
        self._replies_not_sent = 0
        self._interrupted: list[InterruptedReply] = []
        self._reply_failure_logged_at = -1e9
        # Nothing from outside ends the daemon: a task that fails is logged, counted and
        # restarted; only a configuration error ends it (exit 2).
        self.supervisor = TaskSupervisor(backoff_min_s=0.5, backoff_max_s=30.0,
                                         fatal=(ConfigError,))

    # -- clocks ------------------------------------------------------------------------

    def now(self) -> Now:
        return Now(time.monotonic(), time.time())

    def cabinet_clock(self) -> CabinetClock:
        return CabinetClock(self.boot_id, int((time.monotonic() - self._start_mono) * 1000))

    def _reading(self) -> ClockReading:
        c = self.cabinet_clock()
        return ClockReading(boot_id=c.boot_id, uptime_ms=c.uptime_ms)

    def stop(self) -> None:
        """Begin a graceful stop (idempotent); ``on_stop`` arms the shutdown deadline."""
        self._stop.set()
        if self.on_stop is not None:
            self.on_stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def terminate(self) -> None:
        """SIGTERM/SIGINT: stop, and stay stopped (a stop wins over a pending restart)."""
        self.restart_requested = False
        self.stop()

    # -- messages ----------------------------------------------------------------------

    def _status(self, state: Literal["online", "offline"]) -> Status:
        code_key = self.lane.codes.key.published() if hasattr(self, "lane") else None
        return status_message(self.settings, state, self.boot_id, self._reading(), code_key)

    async def snapshot(self) -> dict[str, Any]:
        return to_builtins(self._state_message())

    def _state_message(self) -> State:
        self._state_revision += 1
        return state_message(
            self.settings, boot_id=self.boot_id, revision=self._state_revision,
            reading=self._reading(), snapshot=self.model.snapshot(),
            temperatures=self.poller.temperatures.values, alarms=self.sink.alarms.active(),
            outbox_depth=self.pump_depth,
            lane=self.lane.snapshot() if hasattr(self, "lane") else None,
        )

    async def _telemetry(self) -> Telemetry:
        assert self.link is not None
        assert self.hardware is not None
        assert self.store is not None
        with contextlib.suppress(StoreError):
            self.pump_depth = await self.store.depth()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return telemetry_message(
            self.settings, boot_id=self.boot_id, reading=self._reading(),
            uptime_s=time.monotonic() - self._start_mono,
            cpu_s=usage.ru_utime + usage.ru_stime, buses=self.hardware.bus_stats(),
            outbox_depth=self.pump_depth, temperatures=self.poller.temperatures.values,
            mqtt=self.link.snapshot().to_stats(), task_restarts=self.supervisor.restarts,
        )

    # -- start-up ----------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        topics = CabinetTopics(s.mqtt.topic_root, s.cabinet.site, s.cabinet.id)
        prefix = (s.redis.key_prefix or f"locker:{s.cabinet.site}").removesuffix(":")
        prefix = prefix.removesuffix(f":{s.cabinet.id}")
        async with contextlib.AsyncExitStack() as stack:
            self.store = await Store.connect(
                s.redis.url, prefix, s.cabinet.id, production=is_production(s),
                uptime_ms=lambda: self.cabinet_clock().uptime_ms)
            stack.push_async_callback(self.store.close)
            boot = await self.store.new_boot()
            self.boot_id = boot.id
            log.info("starting", extra={"ctx": {"boot": boot.id, "boot_number": boot.number,
                                                "version": __version__}})
            overlay_refused = await self._load_overlay()
            s = self.settings
            self.hardware = Hardware(s, self.backend)
            self.hardware.open()
            stack.push_async_callback(self.hardware.close)
            off = await self.hardware.all_off()
            stored = await self.store.load_compartments()
            self.model = CabinetModel(
                compartment_setups(s), offline_after=s.timing.unknown_after_failed_polls,
                filtering=signal_filtering(s), stored=stored,
                reported_doors=await self.store.load_doors(),
                # Every board the poller reads, also one no compartment is wired to yet (a
                # spare): its health is tracked and alarmed like any other's.
                extra_boards=[name for bus in self.hardware.buses
                              for name, board in self.hardware.boards_on(bus) if board.inputs],
            )
            self.pump_depth = await self.store.depth()
            self.state_pub = StatePublisher(self._build_state, self._publish_state,
                                            coalesce_s=s.timing.state_coalesce_s)
            self.sink = EventSink(self.store, on_committed=self._on_committed,
                                  hand_over=self._hand_over)
            stack.push_async_callback(self.sink.close)
            await self.sink.emit([PendingEvent(
                "daemon_started",
                {"version": __version__, "boot_number": boot.number,
                 "outputs_off": {k: v is None for k, v in off.items()}},
                time.time())])
            if overlay_refused is not None:
                await self.sink.emit([overlay_refused])
            self.keeper = StateKeeper(self.model, self.store, self.sink, stored)
            self.emit = self.keeper.emit
            # The poller hands each cycle's changes to the next group commit and polls on:
            # it never waits for an fsync (see docs/decisions/0016-group-commit.md).
            self.poller = Poller(
                self.model, self.hardware, self.keeper.submit, now=self.now,
                interval_s=s.timing.poll_interval_s, on_change=self.state_pub.mark_dirty,
            )
            policy = UnlockPolicy(unlock_limits(s))
            self.unlock = UnlockService(s, self.model, self.hardware, policy, self.emit,
                                        now=self.now, on_change=self.state_pub.mark_dirty,
                                        submit=self.keeper.submit)
            self.zones = ZoneMonitor(s, lambda: self.poller.temperatures.values,
                                     self.sink.emit, self.store,
                                     on_change=self.state_pub.mark_dirty)
            self.takeover = TakeoverWatch(self.emit)
            self.store_watch = StoreWatch(self.store, self.sink.emit,
                                          on_change=self.state_pub.mark_dirty)
            self.lane = LaneService.from_settings(
                s, self.model, self.store, self.unlock, self.emit, now=self.now,
                on_change=self.state_pub.mark_dirty,
                code_key_file=default_code_key_file(self.config_path))
            stack.push_async_callback(self.lane.close)
            verifier = CommandVerifier(
                s.cabinet.id, public_keys(s), self.cabinet_clock, MemoryReplayStore(),
                site_id=s.cabinet.site,
                revocations=RevocationList.from_dict(await self.store.load_revocations()),
                max_lifetime_ms=round(s.timing.command_max_ttl_s * 1000))
            self.commands = CommandService(
                s, self.model, self.store, self.unlock, verifier, self.emit,
                now=self.now, cabinet_clock=self.cabinet_clock, snapshot=self.snapshot,
                on_change=self.state_pub.mark_dirty, save=self.keeper.save,
                unavailable_zones=self.zones.unavailable_zones,
                apply_config=self._apply_config,
                codes=self.lane.codes, clear_lane=self.lane.clear_lockout,
                submit=self.keeper.submit, finish=self.keeper.finish_command,
            )
            stack.push_async_callback(self.commands.close)
            await self._answer_interrupted()
            await self.poller.poll_once()
            await self.poller.read_probes()
            await self._reconcile(stored)
            await self.lane.start()  # codes are checked offline: before the broker
            self._restore_alarms()
            # From here the doors and the lane are served, with or without the broker.
            log.info("serving the lane", extra={"ctx": {"boot": boot.id}})

            link_settings = MqttLinkSettings.from_config(s.mqtt)
            self.link = MqttLink(link_settings, topics, self._status,
                                 on_connection_change=self._on_link_change)
            self.pump = OutboxPump(self.store, self._publish_event, topics.events,
                                   wait_connected=self.link.wait_connected)
            self.topics = topics
            self.link.start()
            stack.push_async_callback(self.link.close)
            self.state_pub.mark_dirty()
            try:
                # Every task starts now: the lane is served whether or not the broker is
                # there; only the readiness notice waits (a while) for the broker.
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(self.supervisor.run(name, factory), name=name)
                        for name, factory in self._long_running().items()
                    ]
                    await self._stop.wait()
                    await _cancel_all(tasks)
            finally:
                self.notifier.stopping()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self.hardware.all_off()
                log.info("stopped", extra={"ctx": {"boot": self.boot_id}})
        return 0

    def _long_running(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The daemon's tasks by name, each run (and restarted) by the supervisor."""
        assert self.link is not None
        return {
            "ready": self._announce_ready,
            "interrupted": self._send_interrupted_replies,
            "poller": self.poller.run,
            "ticker": self.poller.run_ticker,
            "outbox": self.pump.run,
            "state": self.state_pub.run,
            "telemetry": self._telemetry_loop,
            "commands": self._command_loop,
            "watchdog": self._watchdog_loop,
            "lane": self.lane.run,
            "zones": self.zones.run,
            "takeover": self.takeover.run,
            "store": self.store_watch.run,
        }

    async def _announce_ready(self) -> None:
        """READY=1 once the link is up, or after ``ready_timeout_s`` without it."""
        assert self.link is not None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the awaited thing completes, and the task would never end.
            async with asyncio.timeout(self.ready_timeout_s):
                await self.link.wait_connected()
            self.notifier.ready("running")
        except TimeoutError:
            self.notifier.ready("running offline: broker unreachable")
            log.warning("broker unreachable at start-up, running offline")
        self.ready.set()

    async def _load_overlay(self) -> PendingEvent | None:
        assert self.store is not None
        settings, refused = await load_overlay(self.store, self.config_path, self.flags)
        if settings is not None:
            self.settings = settings
        return refused

    async def _apply_config(self, command: ApplyConfigCommand) -> dict[str, Any]:
        """Validate the change as a whole, store it, and restart once the reply is out."""
        assert self.store is not None
        args = command.args
        if self.config_path is None:
            raise CommandRejected(ErrorCode.INVALID_CONFIG,
                                  "this daemon runs without a config file", "args.config")
        if args.base_hash is not None and args.base_hash != self.settings.config_hash:
            raise CommandRejected(ErrorCode.CONFLICT,
                                  "the configuration changed since base_hash", "args.base_hash")
        merged = merge(await self.store.load_config_overlay() or {}, args.config)
        try:
            applied = settings_with_overlay(self.config_path, self.flags, merged)
        except OverlayRejected as exc:
            field = f"args.config.{exc.key}" if exc.key else "args.config"
            raise CommandRejected(ErrorCode.INVALID_CONFIG, str(exc)[:480], field) from exc
        await self.store.save_config_overlay(merged)
        await self.sink.emit([PendingEvent(
            "config_applied", {"command": command.id, "sections": sorted(args.config),
                               "config_hash": applied.config_hash}, time.time())])
        self.restart_requested = True
        return {"config_hash": applied.config_hash, "sections": sorted(args.config),
                "restart": True}

    async def _answer_interrupted(self) -> None:
        assert self.store is not None
        self._interrupted = await answer_interrupted(self.store, self.sink, self._reading())

    async def _send_interrupted_replies(self) -> None:
        """The replies of commands a restart interrupted, each sent once where it was
        asked for, as soon as the broker is there (a repeat of the id gets it again)."""
        assert self.link is not None
        while self._interrupted:
            await self.link.wait_connected()
            owed = self._interrupted[0]
            target = owed.reply_to or ReplyTarget()
            incoming = IncomingCommand(payload=b"", topic=self.topics.cmd,
                                       response_topic=target.topic,
                                       correlation_data=target.correlation)
            try:
                await self.link.reply(incoming, owed.payload)
            except (LinkDown, MqttLinkError) as exc:
                log.warning("interrupted command's reply not sent yet; retrying",
                            extra={"ctx": {"command": owed.command_id, "error": str(exc)}})
                await asyncio.sleep(1.0)
                continue
            log.info("interrupted command answered",
                     extra={"ctx": {"command": owed.command_id}})
            self._interrupted.pop(0)

    async def _reconcile(self, stored: dict[str, dict[str, Any]]) -> None:
        await reconcile(self.model, self.sink, stored)

    def _restore_alarms(self) -> None:
        """The state's alarm list is fed by this run's events; alarms restored from the
        store (raised and reported before this start, not cleared) are added here:
        compartments in fault and the lane's wrong-code alarms."""
        for compartment in self.model.compartments:
            if compartment.faulted:
                self.sink.alarms.restore("compartment_fault",
                                         compartment.faulted_at or time.time(),
                                         compartment=compartment.compartment_id)
        for alarm, subject in self.lane.alarms.active():
            since = self.lane.alarms.since(alarm, subject)
            if since is not None:
                self.sink.alarms.restore(alarm, since)

    # -- running -----------------------------------------------------------------------

    def _on_committed(self) -> None:
        # Events committed before the link exists are found by the pump's first drain.
        if hasattr(self, "pump"):
            self.pump.wake()
        # Whatever made an event may have changed the state (lane inputs, zones, alarms).
        if hasattr(self, "state_pub"):
            self.state_pub.mark_dirty()

    def _hand_over(self, events: list[Event]) -> None:
        if hasattr(self, "pump"):
            self.pump.hand_over(events)

    def _on_link_change(self, snapshot: Any) -> None:
        self.takeover.note(snapshot.takeovers)
        if snapshot.connected:
            self.state_pub.mark_dirty()
            self.pump.wake()

    async def _publish_event(self, topic: str, payload: bytes) -> None:
        assert self.link is not None
        await self.link.publish(topic, payload, qos=1)

    async def _build_state(self) -> bytes:
        assert self.store is not None
        with contextlib.suppress(StoreError):
            self.pump_depth = await self.store.depth()
        return encode(self._state_message())

    async def _publish_state(self, payload: bytes) -> None:
        assert self.link is not None
        await self.link.publish(self.topics.state, payload, qos=1, retain=True)

    async def _telemetry_loop(self) -> None:
        assert self.link is not None
        while True:
            await asyncio.sleep(self.settings.timing.telemetry_interval_s)
            with contextlib.suppress(MqttLinkError):
                await self.link.publish(self.topics.telemetry, encode(await self._telemetry()),
                                        qos=0)

    async def _command_loop(self) -> None:
        """Commands one at a time, their replies sent concurrently (at most
        ``REPLIES_IN_FLIGHT`` waiting for their PUBACK): the next command is handled while
        the broker acknowledges the last reply, so a flood is answered at the broker's pace
        and a real command does not wait behind a queue of round trips."""
        assert self.link is not None
        in_flight = asyncio.Semaphore(REPLIES_IN_FLIGHT)
        sending: set[asyncio.Task[None]] = set()
        try:
            async for incoming in self.link.commands():
                reply = await self._answer(incoming)
                if self.restart_requested:
                    await self._send_reply(incoming, reply)  # out before the restart
                    log.info("restarting to apply the configuration dispatch sent")
                    self.stop()
                    continue
                await in_flight.acquire()
                task = asyncio.get_running_loop().create_task(
                    self._send_reply(incoming, reply), name="reply")
                sending.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    sending.discard(t)
                    in_flight.release()

                task.add_done_callback(done)
        finally:
            for task in list(sending):
                task.cancel()

    async def _handle_command(self, incoming: IncomingCommand) -> None:
        """Handle one command and send its reply (restarting after an accepted
        ``apply_config``)."""
        reply = await self._answer(incoming)
        await self._send_reply(incoming, reply)
        if self.restart_requested:
            log.info("restarting to apply the configuration dispatch sent")
            self.stop()

    async def _answer(self, incoming: IncomingCommand) -> bytes:
        try:
            return await self.commands.handle(
                incoming.payload, received_bytes=incoming.size,
                reply_to=ReplyTarget(incoming.response_topic, incoming.correlation_data)
                if incoming.response_topic else None)
        except Exception:
            # A bug must not take the lane down with it: say so, answer, carry on.
            log.exception("command handling failed")
            return encode(Reply.refusal(
                CommandRejected(ErrorCode.INTERNAL, "the cabinet failed to handle this "
                                "command; it was not executed to the end",
                                command_id=recover_id(incoming.payload)), self._reading()))

    async def _send_reply(self, incoming: IncomingCommand, reply: bytes) -> None:
        assert self.link is not None
        try:
            await self.link.reply(incoming, reply)
        except (LinkDown, MqttLinkError) as exc:
            # The reply is stored: dispatch gets it again by repeating the command id.
            self._replies_not_sent += 1
            now = time.monotonic()
            if now - self._reply_failure_logged_at >= 10.0:
                log.warning("reply not sent", extra={"ctx": {
                    "error": str(exc), "not_sent_in_all": self._replies_not_sent}})
                self._reply_failure_logged_at = now

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None and not self.notifier.enabled:
            return
        health = HealthStatus(self.notifier.status)
        while True:
            if interval is not None and self.poller.fresh(time.monotonic()):
                self.notifier.watchdog()
            elif interval is not None:
                log.error("polls are stale: watchdog not fed")
            if self.ready.is_set() and self.link is not None:  # STATUS= for systemctl status
                health.show(self.model.snapshot()["boards"], self.link.snapshot().connected,
                            self.sink.alarms.active())
            await asyncio.sleep(interval or HEALTH_EVERY_S)


async def _cancel_all(tasks: list[asyncio.Task[Any]], every_s: float = 3.0,
                      rounds: int = 10) -> None:
    """Cancel ``tasks``, and again every ``every_s`` those still running, at most
    ``rounds`` times. A cancellation can be lost on the way: Python 3.11's
    ``asyncio.wait_for``, which redis-py (the store's client under ``memory://``) wraps
    around every command it sends, returns the
    answer and drops the cancellation when both arrive together, and the loop around it
    would go on for ever (the daemon's stop, an ``apply_config`` restart). The interval
    leaves a task's own clean-up on cancellation the time to finish."""
    for task in tasks:
        task.cancel()
    for _ in range(rounds):
        running = [task for task in tasks if not task.done()]
        if not running:
            return
        await asyncio.wait(running, timeout=every_s)
        for task in running:
            if not task.done():
                task.cancel()
