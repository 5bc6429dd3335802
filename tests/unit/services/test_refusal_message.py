"""A refusal names its code once: in the reply's ``code``, not again in its ``message``."""

from __future__ import annotations

from tests.unit.services.conftest import Core


async def test_unknown_compartment_message_does_not_repeat_the_code(core: Core) -> None:
    reply = await core.send(core.command("open", {"compartment": "Z99", "reason": "staff"}))
    error = reply["error"]
    assert error["code"] == "unknown_compartment"
    assert "unknown_compartment" not in error["message"]
    assert error["message"]


async def test_a_more_precise_domain_reason_is_kept_once(core: Core) -> None:
    reply = await core.send(core.command("assign", {"order_id": "g-1", "size": "XL",
                                                    "zone": "chilled", "pool": "grocery"}))
    error = reply["error"]
    assert error["code"] == "no_compartment"
    assert error["message"].startswith("no_compartment_available: no free chilled")
    assert error["message"].count("no_compartment_available") == 1
