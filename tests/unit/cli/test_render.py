"""How lockerctl shows messages: plain payloads in, readable lines and tables out."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from controller.mqtt.dispatch import Received
from controller.tools.render import (
    StateDigest,
    TrafficPrinter,
    describe_command,
    describe_event,
    describe_reply,
    describe_status,
    describe_telemetry,
    state_table,
    status_table,
)

CLOCK = {"boot_id": "4b7c9e2a1f0d4c3b9a516d2e8f0a7b13", "uptime_ms": 8812}


def compartment(cid: str, state: str = "free", **extra: Any) -> dict[str, Any]:
    return {"id": cid, "size": "M", "zone": "chilled", "pool": "grocery", "state": state,
            "door": "closed", "latch": "locked", "occupancy": "empty", **extra}


def snapshot(revision: int, *compartments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"cabinet": "cab-01", "boot_id": CLOCK["boot_id"], "revision": revision,
            "at": "2026-11-22T10:00:00Z", "cabinet_clock": CLOCK,
            "compartments": list(compartments), **extra}


def render(renderable: Any) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_event_line_names_seq_kind_compartment_and_data() -> None:
    text = describe_event({"seq": 7, "kind": "door_opened", "compartment": "A01",
                           "data": {"after_pulse_s": 0.063, "authorised": True,
                                    "expires_at": 1.0}}).plain
    assert text == "#7 door_opened A01 after_pulse_s=0.063 authorised=True"


def test_event_without_compartment_or_data() -> None:
    assert describe_event({"seq": 1, "kind": "daemon_started"}).plain == "#1 daemon_started"


def test_long_event_data_is_cut() -> None:
    text = describe_event({"seq": 2, "kind": "x", "data": {"k": "v" * 500}}).plain
    assert len(text) < 120
    assert text.endswith("…")


def test_reply_ok_and_refused() -> None:
    ok = describe_reply({"id": "c-1", "ok": True, "result": {"compartment": "A01"}}).plain
    assert ok == "c-1 ok compartment=A01"
    refused = describe_reply({"id": "c-2", "ok": False, "error": {
        "code": "unauthenticated", "message": "must be signed", "field": "sig"}}).plain
    assert refused == "c-2 REFUSED unauthenticated: must be signed (field sig)"


def test_reply_with_a_state_is_summarised() -> None:
    state = snapshot(3, compartment("A01"), compartment("A02", "loaded"))
    text = describe_reply({"id": "c-3", "ok": True, "result": state}).plain
    assert text == "c-3 ok 2 compartments: 1 free, 1 loaded"


def test_command_line_shows_signing() -> None:
    command = {"id": "c-9", "type": "open", "args": {"compartment": "A01", "reason": "staff"}}
    assert describe_command(command, signed=True).plain == \
        "c-9 open compartment=A01 reason=staff [signed]"
    assert describe_command(command, signed=False).plain.endswith("[unsigned]")


def test_status_line() -> None:
    text = describe_status({"state": "offline", "boot_id": CLOCK["boot_id"],
                            "version": "0.1.0", "at": "2026-11-22T10:00:00Z"}).plain
    assert text == "offline boot 4b7c9e2a version 0.1.0 at 2026-11-22T10:00:00Z"


def test_telemetry_summary() -> None:
    text = describe_telemetry({
        "uptime_s": 12.04, "outbox_depth": 0,
        "buses": [{"name": "rs485-0", "transactions": 312, "errors": 1}],
        "temperatures": {"chilled": 3.04, "frozen": None},
        "mqtt": {"connected": True, "reconnects": 2}}).plain
    assert text == ("up 12.0 s, outbox 0, rs485-0 312 tx/1 err, chilled 3.0 °C, frozen ?, "
                    "mqtt up, 2 reconnects")


def test_state_digest_reports_what_changed() -> None:
    digest = StateDigest()
    first = digest.describe(snapshot(1, compartment("A01"), compartment("A02"))).plain
    assert first == "rev 1: 2 compartments: 2 free"
    second = digest.describe(snapshot(2, compartment("A01", "assigned", order_id="g-1"),
                                      compartment("A02"))).plain
    assert second == ("rev 2: A01 assigned order g-1 (door closed, latch locked, "
                      "occupancy empty)")
    third = digest.describe(snapshot(
        3, compartment("A01", "assigned", order_id="g-1"), compartment("A02"),
        alarms=[{"kind": "board_offline", "since": "x", "board": "locks-a"}])).plain
    assert third == "rev 3: no compartment changed; alarms: board_offline locks-a"


def test_state_digest_first_snapshot_lists_busy_compartments() -> None:
    text = StateDigest().describe(snapshot(5, compartment("A01", "loaded", order_id="p-1",
                                                          occupancy="occupied"))).plain
    assert text == ("rev 5: 1 compartments: 1 loaded; A01 loaded order p-1 "
                    "(door closed, latch locked, occupancy occupied)")


def test_traffic_printer_lines_and_counts() -> None:
    console = Console(width=200, record=True, color_system=None)
    printer = TrafficPrinter(console, started=100.0)
    printer(Received("t/events", "events", {"seq": 1, "kind": "daemon_started"}, False, 101.5))
    printer(Received("t/status", "status", {"state": "online", "boot_id": "abcdef0123",
                                            "version": "1"}, True, 102.0))
    printer(Received("t/x", "cmd", {"id": "c"}, False, 103.0))  # not shown
    lines = console.export_text().splitlines()
    assert lines == ["+  1.50s event     #1 daemon_started",
                     "+  2.00s status    (retained) online boot abcdef01 version 1"]
    assert printer.counts == {"events": 1, "status": 1, "cmd": 1}


def test_traffic_printer_can_skip_retained() -> None:
    console = Console(width=200, record=True, color_system=None)
    printer = TrafficPrinter(console, started=0.0, show_retained=False)
    printer(Received("t/state", "state", snapshot(1, compartment("A01")), True, 1.0))
    assert console.export_text() == ""


def test_tables() -> None:
    state = snapshot(4, compartment("A01", "loaded", order_id="p-1", door="unknown"),
                     compartment("B01", latch=None),
                     zones=[{"name": "chilled", "kind": "chilled", "temperature_c": 7.5,
                             "min_c": 2.0, "max_c": 4.0, "in_range": False}],
                     boards=[{"name": "locks-a", "online": False}],
                     alarms=[{"kind": "sensor_unknown", "since": "t", "compartment": "A01"}])
    text = render(state_table(state))
    assert "│ A01 │ M    │ chilled │ grocery │ loaded │ p-1   │ unknown │ locked │" in text
    assert "│ B01 │ M    │ chilled │ grocery │ free   │       │ closed  │ -      │" in text
    status = {"state": "online", "cabinet": "cab-01", "boot_id": CLOCK["boot_id"],
              "version": "0.1.0", "at": "2026-11-22T10:00:00Z", "config_hash": "ab" * 32}
    text = render(status_table(status, state))
    assert "chilled: 7.5 °C (range 2.0..4.0) OUT OF RANGE" in text
    assert "locks-a OFFLINE" in text
    assert "sensor_unknown A01 since t" in text
    assert "8.8 s at state revision 4" in text
    assert "abababababababab" in text
    assert "boot id" in render(status_table(status, None))
