"""One realistic example of every message, as plain JSON data.

They are embedded in the generated JSON Schemas (``examples``), repeated in
``docs/mqtt/asyncapi.yaml``, and the tests check that each one validates against its schema
and round-trips through its model, so the documentation cannot show a payload the code
would refuse.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BOOT_ID", "CONFIG_HASH", "EXAMPLES", "SIG_EXAMPLE"]

BOOT_ID = "4b7c9e2a-1f0d-4c3b-9a51-6d2e8f0a7b13"
_CLOCK = {"boot_id": BOOT_ID, "uptime_ms": 8812345}
_DEADLINE = {"boot_id": BOOT_ID, "uptime_ms": 8822345}
SIG_EXAMPLE = "3q2+7w" * 14 + "AB=="
#: A configuration hash: SHA-256 of the effective public configuration, 64 hex digits.
CONFIG_HASH = "5f0c2a9e7b41d3c86e2f90a1b7c4d5e6f8091a2b3c4d5e6f708192a3b4c5d6e7"

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "status": [
        {
            "state": "online", "cabinet": "cab-01", "boot_id": BOOT_ID, "version": "0.1.0",
            "cabinet_clock": {"boot_id": BOOT_ID, "uptime_ms": 1520},
            "at": "2026-11-22T07:02:11Z", "config_hash": CONFIG_HASH,
            "code_key": {"scheme": "x25519-hkdf-sha256-chacha20poly1305",
                         "key_id": "eedd883da0a94515",
                         "public_key": "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8="},
        },
        {
            "state": "offline", "cabinet": "cab-01", "boot_id": BOOT_ID, "version": "0.1.0",
            "cabinet_clock": {"boot_id": BOOT_ID, "uptime_ms": 1520},
            "at": "2026-11-22T07:02:11Z",
        },
    ],
    "state": [
        {
            "cabinet": "cab-01", "boot_id": BOOT_ID, "revision": 42,
            "at": "2026-11-22T10:15:30Z", "cabinet_clock": _CLOCK,
            "compartments": [
                {"id": "A01", "size": "M", "zone": "chilled", "pool": "grocery",
                 "state": "loaded", "door": "closed", "latch": "locked",
                 "occupancy": "occupied", "order_id": "ord-88412"},
                {"id": "A02", "size": "S", "zone": "ambient", "pool": "parcels",
                 "state": "blocked", "door": "unknown", "blocked_reason": "lock jammed"},
                {"id": "B01", "size": "L", "zone": "frozen", "pool": "grocery",
                 "state": "free", "door": "closed"},
            ],
            "zones": [
                {"name": "chilled", "kind": "chilled", "temperature_c": 3.1, "min_c": 2.0,
                 "max_c": 4.0, "in_range": True},
                {"name": "frozen", "kind": "frozen", "min_c": -25.0, "max_c": -18.0},
            ],
            "boards": [{"name": "locks-a", "online": True}, {"name": "probes", "online": False}],
            "alarms": [{"kind": "board_offline", "since": "2026-11-22T10:14:02Z",
                        "board": "probes"}],
            "lane": {"vehicle_present": True, "help_requested": False, "tamper": False,
                     "mains_ok": True},
            "outbox_depth": 0,
        },
    ],
    "event": [
        {
            "id": "0f8e3c52-7d4b-4a8e-9b61-2c3d4e5f6a7b", "boot_id": BOOT_ID, "seq": 1207,
            "kind": "door_opened", "at": "2026-11-22T10:15:28Z", "cabinet_clock": _CLOCK,
            "compartment": "A01",
            "data": {"authorised": True, "pulse_acked": True, "after_pulse_s": 1.4},
        },
        {
            "id": "01JDGX4K7M8N9P0QRSTVWXYZ12", "boot_id": BOOT_ID, "seq": 1208,
            "kind": "alarm_raised", "at": "2026-11-22T10:16:00Z",
            "cabinet_clock": {"boot_id": BOOT_ID, "uptime_ms": 8844345},
            "data": {"alarm": "temperature", "zone": "chilled", "temperature_c": 6.4,
                     "min_c": 2.0, "max_c": 4.0, "delay_s": 600.0},
        },
    ],
    "telemetry": [
        {
            "cabinet": "cab-01", "boot_id": BOOT_ID, "at": "2026-11-22T10:15:30Z",
            "cabinet_clock": _CLOCK, "uptime_s": 8812.3,
            "buses": [{"name": "rs485-0", "transactions": 88120, "errors": 3, "timeouts": 2,
                       "crc_errors": 1, "retries": 3, "late_replies": 2,
                       "degraded_units": []}],
            "outbox_depth": 0, "memory_rss_bytes": 48234496, "cpu_percent": 3.5,
            "cpu_temperature_c": 51.2, "temperatures": {"chilled": 3.1, "frozen": None},
            "mqtt": {"connected": True, "since": "2026-11-22T07:02:11Z", "reconnects": 0,
                     "dropped_commands": 0},
            "task_restarts": {"lane": 1},
        },
    ],
    "command": [
        {
            "id": "c-2026-11-22-000123", "type": "open", "cabinet": "cab-01",
            "expires": _DEADLINE, "args": {"compartment": "A01", "reason": "customer_app"},
        },
        {
            "id": "c-2026-11-22-000100", "type": "assign", "cabinet": "cab-01",
            "expires": _DEADLINE,
            "args": {
                "order_id": "ord-88412", "size": "M", "zone": "chilled", "pool": "grocery",
                "tenant": "store", "pickup_from": "2026-11-22T10:00:00Z",
                "expires_at": "2026-11-22T11:30:00Z",
                # The test vectors of docs/mqtt/README.md, "Pickup codes".
                "codes": [
                    {"purpose": "collect", "scheme": "x25519-hkdf-sha256-chacha20poly1305",
                     "key_id": "eedd883da0a94515",
                     "epk": "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ=",
                     "sealed": "cTiAC0uLZYgMSR7t28/ApJn4LwRRLj3UubM="},
                    {"purpose": "deposit", "scheme": "x25519-hkdf-sha256-chacha20poly1305",
                     "key_id": "eedd883da0a94515",
                     "epk": "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ=",
                     "sealed": "DjfjbEj/b+NvLqg1paDSbAsUSRtLg/kpBoRPaI93uJQ="},
                ],
            },
        },
        {
            "id": "c-2026-11-22-000124", "type": "release", "cabinet": "cab-01",
            "expires": _DEADLINE, "args": {"order_id": "ord-88412"},
        },
        {
            "id": "c-2026-11-22-000125", "type": "block", "cabinet": "cab-01",
            "expires": _DEADLINE, "args": {"compartment": "A02", "reason": "lock jammed"},
        },
        {
            "id": "c-2026-11-22-000126", "type": "unblock", "cabinet": "cab-01",
            "expires": _DEADLINE, "args": {"compartment": "A02", "reason": "lock replaced"},
        },
        {"id": "c-2026-11-22-000127", "type": "get_state", "cabinet": "cab-01",
         "expires": _DEADLINE, "args": {}},
        {
            "id": "c-2026-11-22-000128", "type": "apply_config", "cabinet": "cab-01",
            "expires": _DEADLINE,
            "args": {"config": {"timing": {"poll_interval_s": 0.2}},
                     "base_hash": CONFIG_HASH},
        },
        {
            "id": "c-2026-11-22-000129", "type": "clear_lane_lockout", "site": "fr-lyon-07",
            "cabinet": "cab-01",
            "expires": _DEADLINE, "args": {"lane": "lane-1", "reason": "guesser gone, CCTV"},
        },
        {
            "id": "c-2026-11-22-000130", "type": "revoke_grants", "site": "fr-lyon-07",
            "cabinet": "cab-01", "expires": _DEADLINE,
            "args": {"serial": 7, "revoked": [{"grant_id": "g-7f3a", "not_after": 1764443200}]},
        },
        {
            "id": "c-2026-11-22-000132", "type": "clear_fault", "site": "fr-lyon-07",
            "cabinet": "cab-01", "expires": _DEADLINE,
            "args": {"compartment": "A03", "reason": "latch replaced, commissioned"},
        },
    ],
    "signed_command": [
        {
            "signed": (
                '{"id":"c-2026-11-22-000123","type":"open","site":"fr-lyon-07",'
                '"cabinet":"cab-01","expires":{"boot_id":"' + BOOT_ID + '",'
                '"uptime_ms":8822345},'
                '"args":{"compartment":"A01","reason":"customer_app"}}'
            ),
            "key_id": "dispatch-1",
            "sig": SIG_EXAMPLE,
        },
        {
            "signed": (
                '{"id":"c-2026-11-22-000125","type":"block","site":"fr-lyon-07",'
                '"cabinet":"cab-01","expires":{"boot_id":"' + BOOT_ID + '",'
                '"uptime_ms":8822345},"args":{"compartment":"A02","reason":"lock jammed"}}'
            ),
            "key_id": "dispatch-1",
            "sig": SIG_EXAMPLE,
        },
    ],
    "clock_query": [
        {"id": "clk-2026-11-22-0001", "type": "get_clock", "site": "fr-lyon-07",
         "cabinet": "cab-01", "args": {}},
    ],
    "reply": [
        {"id": "c-2026-11-22-000123", "ok": True,
         "result": {"compartment": "A01",
                    "pulse": {"outcome": "pulsed", "accepted": True, "duration_s": 0.7,
                              "timed_by": "board", "board_ms": 21.4, "confirmed_by": "ack"}},
         "cabinet_clock": _CLOCK},
        {"id": "c-2026-11-22-000129", "ok": True,
         "result": {"compartment": "A03",
                    "pulse": {"outcome": "unconfirmed", "duration_s": 0.7,
                              "evidence": "no reply to the flash write; coil read-back timed out",
                              "open_detect_s": 8.0}},
         "cabinet_clock": _CLOCK},
        {"id": "c-2026-11-22-000124", "ok": False,
         "error": {"code": "unknown_compartment", "message": "no compartment Z99",
                   "field": "args.compartment"},
         "cabinet_clock": _CLOCK},
        {"id": "c-2026-11-22-000131", "ok": False,
         "error": {"code": "rate_limited",
                   "message": "cooldown: compartment A01 was pulsed less than 3.0 s ago; "
                              "retry in 2.4 s",
                   "field": "args.compartment", "retry_after_s": 2.412},
         "cabinet_clock": _CLOCK},
        {"id": "clk-2026-11-22-0001", "ok": True, "result": _CLOCK, "cabinet_clock": _CLOCK},
    ],
}
