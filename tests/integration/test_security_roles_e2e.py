"""Keys with roles on a running cabinet (daemon, simulator, mosquitto, redis-server).

A technician's key, granted by dispatch for one site and a limited time, opens a door for
maintenance and nothing more; a revoked grant stops working, and its revocation survives a
restart of the daemon; a signed command must name the site; a plain ``get_state`` does not
take its command id away from a later signed command.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.contract.topics import CabinetTopics
from controller.lab.rig import LaneRig
from controller.mqtt.dispatch import DispatchClient
from controller.security.grants import issue_grant
from tests.integration.test_security_e2e import pulse_count, refused
from tests.support.lane import restart_daemon
from tests.support.mqtt_client import MqttProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    lane = LaneRig(tmp_path_factory.mktemp("roles-lane"), emulate_timing=False)
    lane.start()
    try:
        yield lane
    finally:
        lane.close()


def _topics(rig: LaneRig) -> CabinetTopics:
    return CabinetTopics(rig.topic_root, rig.site, rig.cabinet)


def _grant(rig: LaneRig, key: Ed25519PrivateKey, *, grant_id: str, site: str | None = None,
           valid_from_s: int = -60, valid_until_s: int = 3600) -> dict[str, str]:
    now = int(time.time())
    return issue_grant(rig.key, rig.key_id, grant_id=grant_id, key_id="tech-alice",
                       public_key=key.public_key(), site=site or rig.site,
                       not_before=now + valid_from_s, not_after=now + valid_until_s)


@pytest_asyncio.fixture
async def dispatch(rig: LaneRig) -> AsyncIterator[DispatchClient]:
    async with DispatchClient("127.0.0.1", rig.mqtt_port, _topics(rig), key=rig.key,
                              key_id=rig.key_id, client_id=f"dispatch-{uuid.uuid4().hex[:6]}",
                              ) as client:
        await client.wait_online(30)
        yield client


async def _technician(rig: LaneRig, grant: dict[str, str], key: Ed25519PrivateKey,
                      ) -> DispatchClient:
    client = DispatchClient("127.0.0.1", rig.mqtt_port, _topics(rig), key=key,
                            key_id="tech-alice", grant=grant,
                            client_id=f"tech-{uuid.uuid4().hex[:6]}")
    await client.__aenter__()
    await client.wait_online(30)
    return client


async def _acked(client: DispatchClient, compartment: str, start: int) -> None:
    await client.wait_for(lambda m: m.channel == "events"
                          and m.payload.get("kind") == "unlock_pulse_acked"
                          and m.payload.get("compartment") == compartment, 15, start=start)


async def test_a_technician_key_opens_for_maintenance_only_at_its_site(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    key = Ed25519PrivateKey.generate()
    tech = await _technician(rig, _grant(rig, key, grant_id="g-alice-1"), key)
    try:
        pulses, start = pulse_count(rig), len(tech.messages)
        reply = await tech.command("open", {"compartment": "A02", "reason": "maintenance"})
        assert reply["ok"], reply
        await _acked(tech, "A02", start)
        assert pulse_count(rig) == pulses + 1
        pulses = pulse_count(rig)
        refused(await tech.command("open", {"compartment": "A03", "reason": "customer_app"}),
                "forbidden")
        refused(await tech.command("assign", {"order_id": "o-tech", "size": "S",
                                              "zone": "ambient", "pool": "grocery"}),
                "forbidden")
        refused(await tech.command("revoke_grants", {"serial": 99, "revoked": []}),
                "forbidden")
        assert (await tech.command("block", {"compartment": "B06", "reason": "check"}))["ok"]
        assert (await tech.command("unblock", {"compartment": "B06", "reason": "ok"}))["ok"]
        # Its role allows clear_fault: refused only because B06 is not in fault.
        refused(await tech.command("clear_fault", {"compartment": "B06", "reason": "ok"}),
                "conflict")
        assert pulse_count(rig) == pulses
    finally:
        await tech.__aexit__(None, None, None)

    # The same key with a grant for another site, or an expired grant: refused.
    for grant, code in ((_grant(rig, key, grant_id="g-alice-2", site="another-site"),
                         "wrong_site"),
                        (_grant(rig, key, grant_id="g-alice-3", valid_from_s=-7200,
                                valid_until_s=-10), "forbidden")):
        tech = await _technician(rig, grant, key)
        try:
            refused(await tech.command("open", {"compartment": "A03",
                                                "reason": "maintenance"}), code)
        finally:
            await tech.__aexit__(None, None, None)
    assert pulse_count(rig) == pulses


async def test_a_technician_key_never_opens_a_compartment_holding_an_order(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    """The reason (``maintenance``) is the technician's own word: it does not open a
    customer's order, blocked or not; a free compartment opens, and dispatch's root key
    still opens the loaded one."""
    assigned = await dispatch.command("assign", {"order_id": "o-tech-guard", "size": "S",
                                                 "zone": "ambient", "pool": "parcel",
                                                 "compartment": "B03"})
    assert assigned["ok"], assigned
    key = Ed25519PrivateKey.generate()
    tech = await _technician(rig, _grant(rig, key, grant_id="g-alice-guard"), key)
    try:
        pulses = pulse_count(rig)
        for reason in ("maintenance", "audit"):
            reply = refused(await tech.command("open", {"compartment": "B03",
                                                        "reason": reason}), "forbidden")
            assert reply.error is not None
            assert reply.error.field == "args.compartment"
        # Blocking is in a technician's hands: it does not lift the rule.
        assert (await tech.command("block", {"compartment": "B03", "reason": "check"}))["ok"]
        refused(await tech.command("open", {"compartment": "B03", "reason": "maintenance"}),
                "forbidden")
        assert (await tech.command("unblock", {"compartment": "B03", "reason": "ok"}))["ok"]
        assert pulse_count(rig) == pulses
        # (control) a compartment holding no order opens for maintenance.
        start = len(tech.messages)
        free = await tech.command("open", {"compartment": "B04", "reason": "maintenance"})
        assert free["ok"], free
        await _acked(tech, "B04", start)
        assert pulse_count(rig) == pulses + 1
    finally:
        await tech.__aexit__(None, None, None)
    # Dispatch's root key may still open it.
    start = len(dispatch.messages)
    staff = await dispatch.command("open", {"compartment": "B03", "reason": "maintenance"})
    assert staff["ok"], staff
    await _acked(dispatch, "B03", start)
    released = await dispatch.command("release", {"order_id": "o-tech-guard"})
    assert released["ok"], released


async def test_a_signed_command_must_name_the_cabinets_site(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    pulses = pulse_count(rig)
    for site in (None, "another-site"):
        command = dispatch.build("open", {"compartment": "A04", "reason": "maintenance"})
        if site is None:
            del command["site"]
        else:
            command["site"] = site
        refused(await dispatch.send(dispatch.encode(command), command["id"]), "wrong_site")
    assert pulse_count(rig) == pulses


async def test_a_plain_get_state_does_not_claim_its_id(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    command_id = f"c-shared-{uuid.uuid4().hex[:8]}"
    plain = await dispatch.command("get_state", sign=False, command_id=command_id)
    assert plain["ok"], plain
    pulses, start = pulse_count(rig), len(dispatch.messages)
    signed = await dispatch.command("open", {"compartment": "A05", "reason": "maintenance"},
                                    command_id=command_id)
    assert signed["ok"], signed
    await _acked(dispatch, "A05", start)
    assert pulse_count(rig) == pulses + 1


async def test_a_response_topic_cannot_point_replies_at_the_cabinets_reports(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    topics = _topics(rig)
    with MqttProbe(rig.mqtt_port, client_id=f"spoof-{uuid.uuid4().hex[:6]}") as probe:
        probe.subscribe(topics.reply)
        probe.subscribe(topics.status)
        probe.subscribe(topics.events)
        for target in (topics.status, topics.events):
            command = dispatch.build("get_state", {})
            probe.publish(topics.cmd, json.dumps(command).encode(), response_topic=target,
                          correlation_data=command["id"].encode())
            reply = await probe.await_message(
                lambda m, cid=command["id"]: m.json().get("id") == cid, timeout=15)
            assert reply.topic == topics.reply, reply.topic
        # The retained status is still the cabinet's status, not a reply.
        assert "ok" not in probe.messages(topics.status)[-1].json()
        assert not [m for m in probe.messages(topics.events) if "ok" in m.json()]


# -- runs last: it restarts the daemon --------------------------------------------------------


async def test_a_revoked_grant_stops_working_and_stays_revoked_after_a_restart(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    key = Ed25519PrivateKey.generate()
    grant = _grant(rig, key, grant_id="g-stolen")
    tech = await _technician(rig, grant, key)
    try:
        assert (await tech.command("get_state"))["ok"]
        now = int(time.time())
        reply = await dispatch.command("revoke_grants", {
            "serial": 2, "revoked": [{"grant_id": "g-stolen", "not_after": now + 3600}]})
        assert reply["ok"], reply
        refused(await tech.command("get_state"), "forbidden")
        # An older list, even signed by dispatch, cannot bring the grant back.
        refused(await dispatch.command("revoke_grants", {"serial": 1, "revoked": []}),
                "conflict")
    finally:
        await tech.__aexit__(None, None, None)

    await restart_daemon(rig, dispatch)
    tech = await _technician(rig, grant, key)
    try:
        pulses = pulse_count(rig)
        refused(await tech.command("open", {"compartment": "A06", "reason": "maintenance"}),
                "forbidden")
        assert pulse_count(rig) == pulses
    finally:
        await tech.__aexit__(None, None, None)


async def test_a_second_client_with_the_cabinets_identity_raises_session_takeover(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    """A stolen identity connecting again and again: each connection kicks the cabinet off
    (MQTT 5 reason 0x8E); the cabinet reconnects, and dispatch gets one alarm."""
    client_id = f"locker-{rig.site}-{rig.cabinet}"
    start = len(dispatch.messages)
    for _ in range(4):
        back = len(dispatch.messages)
        with MqttProbe(rig.mqtt_port, client_id=client_id):
            # The real cabinet comes back (and kicks the thief off in turn).
            await dispatch.wait_for(lambda m: m.channel == "status"
                                    and m.payload.get("state") == "online", 20, start=back)
    try:
        raised = await dispatch.wait_for(
            lambda m: m.channel == "events" and m.payload.get("kind") == "alarm_raised"
            and m.payload.get("data", {}).get("alarm") == "session_takeover", 20, start=start)
    except TimeoutError as exc:
        raise AssertionError(f"no session_takeover alarm:\n{rig.logs(tail=3000)}") from exc
    assert raised.payload["data"]["takeovers"] >= 3
    assert raised.payload.get("compartment") is None
