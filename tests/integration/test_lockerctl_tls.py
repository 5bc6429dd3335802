"""``lockerctl status`` and commands through the production broker config: mutual TLS and
the ACL, with dispatch's and a technician's certificates (the PKI comes from
deploy/tls/make-test-ca.sh)."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.contract.topics import CabinetTopics
from controller.mqtt.dispatch import DispatchClient
from controller.tools.lockerctl import main
from tests.integration.test_broker_tls_acl import (  # noqa: F401 (fixtures)
    ROOT_A,
    SITE,
    Client,
    TlsMosquitto,
    broker,
    identity,
    pki,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STATUS = {"state": "online", "cabinet": "cab-01",
          "boot_id": "4b7c9e2a1f0d4c3b9a516d2e8f0a7b13", "version": "0.1.0",
          "cabinet_clock": {"boot_id": "4b7c9e2a1f0d4c3b9a516d2e8f0a7b13", "uptime_ms": 5},
          "at": "2026-11-22T10:00:00Z"}


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")


def test_status_over_mutual_tls(broker: TlsMosquitto, pki: Path,  # noqa: F811
                                capsys: pytest.CaptureFixture[str]) -> None:
    cabinet = Client(broker.port, pki, identity(pki, "cabinet-fr-lyon-07-cab-01"))
    try:
        assert cabinet.connect()
        cabinet.publish(f"{ROOT_A}/status", json.dumps(STATUS), retain=True)
    finally:
        cabinet.close()
    base = ["status", "--broker", f"127.0.0.1:{broker.port}", "--site", SITE,
            "--cabinet", "cab-01", "--timeout", "5", "--tls-ca", str(pki / "ca.crt")]
    code = main([*base, "--tls-cert", str(pki / "dispatch.crt"),
                 "--tls-key", str(pki / "dispatch.key")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "online boot 4b7c9e2a version 0.1.0" in out

    # Without a client certificate the broker refuses: one line, exit 3.
    code = main(base)
    _, err = capsys.readouterr()
    assert code == 3
    assert err.startswith("lockerctl status: broker: ")
    assert err.count("\n") == 1


class _StandInCabinet(Client):
    """Cabinet cab-01 answering each command as the daemon's link does: on the MQTT 5
    response topic, echoing the correlation data."""

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        response = getattr(msg.properties, "ResponseTopic", None)
        correlation = getattr(msg.properties, "CorrelationData", None)
        command = json.loads(msg.payload)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation is not None:
            props.CorrelationData = correlation
        reply = {"id": command["id"], "ok": True, "result": {"who": "cab-01"},
                 "cabinet_clock": STATUS["cabinet_clock"]}
        info = self.paho.publish(response or f"{ROOT_A}/reply", json.dumps(reply), qos=1,
                                 properties=props)
        self.messages.put((str(response), b"", info.rc == 0))


@pytest.mark.parametrize("who", ["technician-fr-lyon-07", "dispatch", "dispatch-2"])
def test_command_and_its_reply_through_the_broker_acl(
    broker: TlsMosquitto, pki: Path, who: str,  # noqa: F811
) -> None:
    """The reply comes back on the requester's response topic, which lies under the
    cabinet's own reply topic: the only place the ACL lets a cabinet answer."""
    cabinet = _StandInCabinet(broker.port, pki, identity(pki, "cabinet-fr-lyon-07-cab-01"))
    try:
        assert cabinet.connect()
        cabinet.publish(f"{ROOT_A}/status", json.dumps(STATUS), retain=True)
        cabinet.subscribe(f"{ROOT_A}/cmd")
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / f"{who}.crt"), str(pki / f"{who}.key"))

        async def ask() -> dict[str, Any]:
            async with DispatchClient("127.0.0.1", broker.port,
                                      CabinetTopics("lockers/v1", SITE, "cab-01"),
                                      tls_context=context) as dc:
                await dc.wait_for(lambda m: m.channel == "status", 5)
                return await dc.command("get_state", {}, sign=False, timeout_s=5)

        reply = asyncio.run(asyncio.wait_for(ask(), 20))
        assert reply["ok"] is True
        assert reply["result"] == {"who": "cab-01"}
        topic, _, sent = cabinet.messages.get(timeout=5)
        assert topic.startswith(f"{ROOT_A}/reply/to/")
        assert sent
    finally:
        cabinet.close()
