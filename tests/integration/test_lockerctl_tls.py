"""``lockerctl status`` through the production broker config: mutual TLS and the ACL,
with dispatch's certificate (the PKI comes from deploy/tls/make-test-ca.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main
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
