"""Dispatch's side: key files, the signed form, and deadlines from a cabinet clock reading."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from controller.clock import CabinetClock
from controller.security import CommandVerifier, KeyFileError, MemoryReplayStore
from controller.security.signing import (
    deadline_from_reading,
    generate_keypair,
    load_private_key,
    load_public_key,
    load_public_keys,
    save_private_key,
    save_public_key,
    sign_command,
)
from tests.unit.security.conftest import BOOT, CABINET, KEY_ID, ManualCabinetClock


def test_private_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    private_key, public_key = generate_keypair()
    path = tmp_path / "dispatch-1.key"
    save_private_key(private_key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_private_key(path)
    assert loaded.public_key().public_bytes_raw() == public_key.public_bytes_raw()


def test_private_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k"
    save_private_key(generate_keypair()[0], path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="exists"):
        save_private_key(generate_keypair()[0], path)
    assert path.read_bytes() == before


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    save_private_key(generate_keypair()[0], path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        load_private_key(path)
    assert "PRIVATE KEY" not in str(info.value)


def test_key_files_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    ec_key = generate_private_key(SECP256R1())
    private = tmp_path / "ec.key"
    private.write_bytes(ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(private, 0o600)
    public = tmp_path / "ec.pub"
    public.write_bytes(ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_private_key(private)
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key(public)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key") as info:
        load_private_key(garbage)
    assert "nope" not in str(info.value)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_public_key(tmp_path / "missing")


def test_public_keys_load_by_key_id(tmp_path: Path) -> None:
    _, public_key = generate_keypair()
    save_public_key(public_key, tmp_path / "d1.pub")
    keys = load_public_keys({"dispatch-1": tmp_path / "d1.pub"})
    assert keys["dispatch-1"].public_bytes_raw() == public_key.public_bytes_raw()
    with pytest.raises(KeyFileError, match="key id"):
        load_public_keys({"no spaces": tmp_path / "d1.pub"})


def test_sign_command_signs_the_compact_utf8_text_it_returns() -> None:
    private_key, public_key = generate_keypair()
    command = {"id": "c1", "type": "open", "cabinet": "cab-01",
               "expires": {"boot_id": "b", "uptime_ms": 5}, "args": {"reason": "porte é"}}
    message = sign_command(command, private_key, "dispatch-1")
    assert set(message) == {"signed", "key_id", "sig"}
    assert message["signed"] == json.dumps(command, separators=(",", ":"), ensure_ascii=False)
    public_key.verify(base64.b64decode(message["sig"]), message["signed"].encode("utf-8"))
    with pytest.raises(ValueError, match="key id"):
        sign_command(command, private_key, "bad key id")
    with pytest.raises(ValueError):
        sign_command({**command, "x": float("nan")}, private_key, "dispatch-1")


def test_deadline_from_reading_stays_within_the_lifetime() -> None:
    reading = CabinetClock("boot-1", 100_000)
    # Reading arrived at local t=50.0 s; sending at t=52.5 s with a 10 s lifetime.
    assert deadline_from_reading(reading, received_at=50.0, now=52.5, ttl_ms=10_000) == {
        "boot_id": "boot-1", "uptime_ms": 112_500}
    with pytest.raises(ValueError, match="ttl_ms"):
        deadline_from_reading(reading, received_at=0.0, now=0.0, ttl_ms=30_001)
    with pytest.raises(ValueError, match="ttl_ms"):
        deadline_from_reading(reading, received_at=0.0, now=0.0, ttl_ms=0)
    with pytest.raises(ValueError, match="monotonic"):
        deadline_from_reading(reading, received_at=5.0, now=4.0)


async def test_end_to_end_dispatch_signs_from_a_reading_and_the_cabinet_accepts(
    tmp_path: Path,
) -> None:
    # Dispatch keeps its key in a file; the cabinet trusts the public half.
    private_key, public_key = generate_keypair()
    save_private_key(private_key, tmp_path / "dispatch.key")
    save_public_key(public_key, tmp_path / "dispatch.pub")
    clock = ManualCabinetClock()
    reading = clock()                 # published by the cabinet in status/reply
    clock.advance(700)                # in flight to dispatch, which receives it at t=10.0
    clock.advance(300)                # dispatch sends at t=10.3; in flight to the cabinet
    expires = deadline_from_reading(reading, received_at=10.0, now=10.3, ttl_ms=30_000)
    command = {"id": "c-1", "type": "open", "cabinet": CABINET, "expires": expires,
               "args": {"compartment": "A01", "reason": "customer_app"}}
    message = sign_command(command, load_private_key(tmp_path / "dispatch.key"), KEY_ID)
    verifier = CommandVerifier(CABINET, load_public_keys({KEY_ID: tmp_path / "dispatch.pub"}),
                               clock, MemoryReplayStore())
    # Even with the full 30 s, the deadline is not "too far": the reading's age counts.
    verified = await verifier.verify(json.dumps(message))
    assert verified.deadline == CabinetClock(BOOT, reading.uptime_ms + 300 + 30_000)
