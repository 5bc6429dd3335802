"""``timing.command_max_ttl_s``: a command whose deadline lies further ahead is refused,
signed (by the verifier) or not (by the command service); one within it is served."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from controller.contract.messages import Reply, from_json
from controller.settings import Settings
from tests.fuzz.cabinet import FuzzCabinet, cabinet_settings


def _settings(max_ttl_s: float, *, signed: bool) -> Settings:
    s = cabinet_settings()
    return msgspec.structs.replace(
        s,
        timing=msgspec.structs.replace(s.timing, command_max_ttl_s=max_ttl_s),
        security=msgspec.structs.replace(s.security, require_signed_commands=signed),
    )


async def _reply(cab: FuzzCabinet, command: dict[str, Any]) -> Reply:
    return from_json(Reply, await cab.service.handle(json.dumps(command).encode()))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
async def test_a_deadline_beyond_the_configured_ttl_is_refused(signed: bool) -> None:
    async with FuzzCabinet(settings=_settings(5.0, signed=signed)) as cab:
        def command(ttl_ms: int, command_id: str) -> dict[str, Any]:
            c = cab.command("get_state", {}, command_id=command_id, ttl_ms=ttl_ms)
            return cab.sign(c) if signed else c

        far = await _reply(cab, command(5_500, "c-ttl-far"))
        assert not far.ok
        assert far.error is not None
        assert far.error.code == "expired"
        assert "ahead" in far.error.message
        near = await _reply(cab, command(4_500, "c-ttl-near"))
        assert near.ok, near.error


async def test_the_default_ttl_serves_a_command_the_short_one_refuses() -> None:
    async with FuzzCabinet(settings=_settings(30.0, signed=True)) as cab:
        reply = await _reply(cab, cab.sign(cab.command("get_state", {}, ttl_ms=5_500)))
        assert reply.ok, reply.error
