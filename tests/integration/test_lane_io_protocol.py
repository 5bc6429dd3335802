"""The lane I/O server's wire protocol (lane-io/1), spoken by a raw TCP client on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulator.lane import MAX_LINE_BYTES, PROTOCOL, LaneIOServer, LaneWorld

WAIT = 5.0


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send_raw(json.dumps(message).encode() + b"\n")
        return await self.recv()

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            line = await self.reader.readline()
        assert line, "server closed the connection"
        message: dict[str, Any] = json.loads(line)
        return message


@pytest.fixture
async def world_server() -> AsyncIterator[tuple[LaneWorld, LaneIOServer]]:
    world = LaneWorld()
    server = LaneIOServer(world)
    await server.start()
    try:
        yield world, server
    finally:
        await server.close()


@pytest.fixture
async def client(world_server: tuple[LaneWorld, LaneIOServer]) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", world_server[1].port)
    c = Client(reader, writer)
    hello = await c.recv()
    assert hello["protocol"] == PROTOCOL
    assert "help_button" in hello["inputs"]
    assert "buzzer" in hello["outputs"]
    try:
        yield c
    finally:
        writer.close()


async def test_read_returns_raw_levels(client: Client, world_server: tuple[LaneWorld, Any]) -> None:
    world, _ = world_server
    world.vehicle_arrives()
    reply = await client.request({"id": "r1", "op": "read"})
    assert reply["ok"] is True
    assert reply["id"] == "r1"
    assert reply["inputs"]["vehicle_present"] == 0  # active-low contact closed
    assert reply["outputs"]["buzzer"] == 0
    assert reply["seq"] == 1


async def test_subscribe_pushes_input_changes_in_order(
    client: Client, world_server: tuple[LaneWorld, Any]
) -> None:
    world, _ = world_server
    reply = await client.request({"id": 1, "op": "subscribe"})
    assert reply["ok"] is True
    world.press_button(bounce=1)
    world.drive_output("buzzer", True)  # outputs not subscribed: not pushed
    world.open_tamper()
    events = [await client.recv() for _ in range(4)]
    assert [(e["event"], e["line"], e["level"]) for e in events] == [
        ("input", "help_button", 0),
        ("input", "help_button", 1),
        ("input", "help_button", 0),
        ("input", "tamper", 1),
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 5]
    assert events[-1]["active"] is True


async def test_set_and_inject(client: Client, world_server: tuple[LaneWorld, Any]) -> None:
    world, _ = world_server
    assert (await client.request({"id": 1, "op": "set", "line": "light_green", "level": 1}))["ok"]
    assert world.lane_light() == "idle"
    reply = await client.request({"id": 2, "op": "inject", "line": "mains_fail", "active": True})
    assert reply["ok"]
    assert world.input_active("mains_fail")


async def test_subscribe_with_outputs(client: Client, world_server: tuple[LaneWorld, Any]) -> None:
    world, _ = world_server
    await client.request({"op": "subscribe", "outputs": True})
    world.drive_output("light_amber", True)
    event = await client.recv()
    assert (event["event"], event["line"], event["active"]) == ("output", "light_amber", True)


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b"{not json\n", "malformed_json", None),
        (b"[1, 2]\n", "bad_request", None),
        (b'{"id": 1.5, "op": "read"}\n', "bad_request", "id"),
        (b'{"id": 7, "op": "dance"}\n', "unknown_op", "op"),
        (b'{"id": 7, "op": "set", "line": "siren", "level": 1}\n', "unknown_line", "line"),
        (b'{"id": 7, "op": "set", "line": "tamper", "level": 1}\n', "not_an_output", "line"),
        (b'{"id": 7, "op": "set", "line": "buzzer", "level": 2}\n', "bad_value", "level"),
        (b'{"id": 7, "op": "set", "line": "buzzer", "level": true}\n', "bad_value", "level"),
        (
            b'{"id": 7, "op": "inject", "line": "doorbell", "active": true}\n',
            "unknown_line",
            "line",
        ),
        (b'{"id": 7, "op": "inject", "line": "buzzer", "active": true}\n', "not_an_input", "line"),
        (b'{"id": 7, "op": "inject", "line": "tamper", "active": 1}\n', "bad_value", "active"),
        (
            b'{"id": 7, "op": "inject", "line": "tamper", "active": true, "bounce": 999}\n',
            "bad_value",
            "bounce",
        ),
    ],
)
async def test_bad_requests_get_structured_errors_and_change_nothing(
    client: Client,
    world_server: tuple[LaneWorld, Any],
    raw: bytes,
    code: str,
    field: str | None,
) -> None:
    world, _ = world_server
    before = (world.input_levels(), world.output_levels())
    await client.send_raw(raw)
    reply = await client.recv()
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert reply["error"].get("field") == field
    assert reply["error"]["message"]
    assert world.log == []
    assert (world.input_levels(), world.output_levels()) == before
    # The connection still works after an error.
    assert (await client.request({"id": "after", "op": "read"}))["ok"] is True


async def test_overlong_line_rejected_and_connection_closed(
    client: Client, world_server: tuple[LaneWorld, Any]
) -> None:
    await client.send_raw(b'{"op": "read", "pad": "' + b"x" * (MAX_LINE_BYTES * 2) + b'"}\n')
    reply = await client.recv()
    assert reply["error"]["code"] == "line_too_long"
    async with asyncio.timeout(WAIT):
        assert await client.reader.read() == b""
    assert world_server[0].log == []


async def test_close_drops_clients_and_is_idempotent(
    client: Client, world_server: tuple[LaneWorld, LaneIOServer]
) -> None:
    _, server = world_server
    await client.request({"op": "subscribe"})
    await server.close()
    await server.close()
    async with asyncio.timeout(WAIT):
        assert await client.reader.read() == b""
