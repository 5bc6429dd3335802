"""The cabinet's code key pinned on dispatch's side: the pin store, and the SDK that seals
only to the pin (never to the key a status shows), refuses without one, and raises (and
reports) a status that shows another key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from controller.contract.topics import CabinetTopics
from controller.dispatch import (
    CodeKeyChanged,
    CodeKeyNotPinned,
    CodeKeyPinError,
    CodeKeyPins,
    DispatchClient,
    PinnedCodeKey,
)
from controller.security.codes import CodeKey

TOPICS = CabinetTopics("lockers/v1", "site-1", "cab-1")
CABINET = CodeKey.generate(scrypt_n=2)
ATTACKER = CodeKey.generate(scrypt_n=2)
REAL = PinnedCodeKey(CABINET.key_id, CABINET.public_bytes)


def _status(key: CodeKey, **extra: Any) -> dict[str, Any]:
    return {"state": "online", "code_key": key.published(),
            "cabinet_clock": {"boot_id": "b1", "uptime_ms": 1000}, **extra}


def _client(**kwargs: Any) -> DispatchClient:
    return DispatchClient("127.0.0.1", 1, TOPICS, client_id="dispatch-test", **kwargs)


# -- PinnedCodeKey ------------------------------------------------------------------------


def test_a_pin_carries_the_id_of_its_own_key_and_nothing_else() -> None:
    assert PinnedCodeKey.of(CABINET.public_bytes) == REAL
    with pytest.raises(CodeKeyPinError, match="not the id"):
        PinnedCodeKey(ATTACKER.key_id, CABINET.public_bytes)
    with pytest.raises(CodeKeyPinError, match="32 bytes"):
        PinnedCodeKey.of(b"short")
    # A status that names the real key id beside another public key is refused.
    forged = dict(ATTACKER.published(), key_id=CABINET.key_id)
    with pytest.raises(CodeKeyPinError, match="not the id"):
        PinnedCodeKey.from_published(forged)
    with pytest.raises(CodeKeyPinError, match="scheme"):
        PinnedCodeKey.from_published(dict(CABINET.published(), scheme="rsa"))


# -- the pin store ------------------------------------------------------------------------


def test_the_store_pins_once_writes_mode_600_and_refuses_another_key(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "code-keys.json"
    pins = CodeKeyPins(path)
    assert pins.get("site-1", "cab-1") is None
    assert pins.entries() == {}
    assert pins.pin("site-1", "cab-1", REAL) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pins.get("site-1", "cab-1") == REAL
    assert pins.get("site-1", "cab-2") is None
    assert pins.pin("site-1", "cab-1", REAL) is False  # the same key: nothing changes

    other = PinnedCodeKey.of(ATTACKER.public_bytes)
    with pytest.raises(CodeKeyChanged) as caught:
        pins.pin("site-1", "cab-1", other)
    assert caught.value.pinned_key_id == REAL.key_id
    assert caught.value.seen_key_id == other.key_id
    assert pins.get("site-1", "cab-1") == REAL  # untouched
    assert pins.pin("site-1", "cab-1", other, replace=True) is True
    assert pins.get("site-1", "cab-1") == other

    data = json.loads(path.read_text())
    entry = data["pins"]["site-1/cab-1"]
    assert set(entry) == {"key_id", "public_key", "pinned_at"}
    assert [p.name for p in path.parent.iterdir()] == ["code-keys.json"]  # no temp left


def test_the_store_refuses_a_file_others_may_write_or_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "code-keys.json"
    pins = CodeKeyPins(path)
    pins.pin("s", "c", REAL)
    path.chmod(0o666)
    with pytest.raises(CodeKeyPinError, match=r"writable by every local user.*chmod 600"):
        pins.get("s", "c")
    path.chmod(0o600)
    path.write_text("[]")
    with pytest.raises(CodeKeyPinError, match="not a code key pin file"):
        pins.get("s", "c")
    path.write_text(json.dumps({"version": 1, "pins": {"s/c": {
        "key_id": ATTACKER.key_id, "public_key": REAL.public_key_b64}}}))
    with pytest.raises(CodeKeyPinError, match="not the id"):
        pins.get("s", "c")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
NOBODY = 65534  # the ``nobody`` account


def _pinned_in(directory: Path) -> CodeKeyPins:
    """A pin file made (mode 0600) in ``directory`` while it was private."""
    directory.mkdir(mode=0o700, exist_ok=True)
    pins = CodeKeyPins(directory / "code-keys.json")
    pins.pin("s", "c", REAL)
    return pins


def _refused_both_ways(pins: CodeKeyPins, says: str) -> None:
    """Neither read nor written: the file is left as it is."""
    before = pins.path.read_bytes() if pins.path.exists() else None
    with pytest.raises(CodeKeyPinError, match=says) as caught:
        pins.get("s", "c")
    assert str(pins.path) in str(caught.value)
    with pytest.raises(CodeKeyPinError, match=says):
        pins.pin("s", "c2", PinnedCodeKey.of(ATTACKER.public_bytes))
    assert (pins.path.read_bytes() if pins.path.exists() else None) == before


def test_a_pin_file_in_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    # Attack: mode 0600 on the file, 0777 on its directory: anyone may rename a file of
    # their own over it.
    pins = _pinned_in(tmp_path / "conf")
    pins.path.parent.chmod(0o777)
    _refused_both_ways(pins, r"conf, on the path of .*writable by every local user.*chmod 700")
    pins.path.parent.chmod(0o770)
    _refused_both_ways(pins, "writable by its group")
    pins.path.parent.chmod(0o700)
    assert pins.get("s", "c") == REAL


def test_a_pin_file_under_a_group_writable_grandparent_is_refused(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir(mode=0o700)
    pins = _pinned_in(top / "conf")
    top.chmod(0o775)  # whoever is in its group can move conf away and put their own there
    _refused_both_ways(pins, r"top, on the path of .*writable by its group")


def test_a_symlink_to_a_pin_file_in_an_open_directory_is_refused(tmp_path: Path) -> None:
    pins = _pinned_in(tmp_path / "open")
    pins.path.parent.chmod(0o777)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    link = home / "code-keys.json"
    link.symlink_to(pins.path)
    _refused_both_ways(CodeKeyPins(link), r"-> .*open.*writable by every local user")
    # And a link in an open directory to a private file: the link itself can be swapped.
    pins.path.parent.chmod(0o700)
    assert CodeKeyPins(link).get("s", "c") == REAL
    home.chmod(0o777)
    _refused_both_ways(CodeKeyPins(link), "home, on the path of")


def test_a_pin_file_of_its_own_in_a_sticky_directory_passes(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: only a file's owner may rename or remove it
    pins = CodeKeyPins(shared / "code-keys.json")
    # Not made there: before it exists, anyone could make it first.
    with pytest.raises(CodeKeyPinError, match="writable by every local user"):
        pins.pin("s", "c", REAL)
    _pinned_in(tmp_path / "private")
    (tmp_path / "private" / "code-keys.json").rename(shared / "code-keys.json")
    assert pins.get("s", "c") == REAL
    assert pins.pin("s", "c2", PinnedCodeKey.of(ATTACKER.public_bytes)) is True


@needs_root
def test_a_pin_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    pins = _pinned_in(tmp_path / "conf")
    os.chown(pins.path, NOBODY, NOBODY)  # 0600, but nobody's: nobody may write it
    _refused_both_ways(pins, f"owned by uid {NOBODY}, not by this user")


@needs_root
def test_a_pin_file_in_a_sticky_directory_another_user_owns_is_refused(
    tmp_path: Path,
) -> None:
    pins = _pinned_in(tmp_path / "shared")
    pins.path.parent.chmod(0o1777)
    os.chown(pins.path.parent, NOBODY, NOBODY)  # its owner may remove any file in it
    _refused_both_ways(pins, f"shared, on the path of .*owned by uid {NOBODY}")
    os.chown(pins.path.parent, 0, 0)
    os.chown(pins.path, NOBODY, NOBODY)  # a file another user owns in a sticky directory
    _refused_both_ways(pins, f"owned by uid {NOBODY}")


# -- the SDK ------------------------------------------------------------------------------


async def test_no_pin_no_sealing_even_with_a_status() -> None:
    client = _client()
    client.feed(TOPICS.status, _status(CABINET), retained=True)
    with pytest.raises(CodeKeyNotPinned, match="no code key pinned"):
        client.seal_codes("o-1", [("collect", "5830019274")])


async def test_codes_are_sealed_to_the_pin_and_open_on_the_cabinet() -> None:
    client = _client(code_key_pin=CABINET.public_bytes)
    assert client.code_key_pin == REAL
    client.feed(TOPICS.status, _status(CABINET), retained=True)
    sealed = client.seal_codes("o-1", [("collect", "5830019274")])
    assert sealed[0]["key_id"] == REAL.key_id
    assert CABINET.open("cab-1", "o-1", "collect-0", sealed[0]) == "5830019274"
    assert client.code_key_changed is None


async def test_a_status_with_another_key_is_an_incident_and_nothing_is_sealed() -> None:
    changes: list[CodeKeyChanged] = []
    client = _client(code_key_pin=REAL, on_code_key_changed=changes.append)
    client.feed(TOPICS.status, _status(CABINET), retained=True)
    client.feed(TOPICS.status, _status(ATTACKER), retained=True)
    client.feed(TOPICS.status, _status(ATTACKER), retained=True)
    assert len(changes) == 1  # reported once per key seen
    assert client.code_key_changed is changes[0]
    with pytest.raises(CodeKeyChanged) as caught:
        client.seal_codes("o-1", [("collect", "5830019274")])
    assert caught.value.pinned_key_id == CABINET.key_id
    assert caught.value.seen_key_id == ATTACKER.key_id
    assert CABINET.key_id in str(caught.value)
    assert ATTACKER.key_id in str(caught.value)
    # A forged status naming the real key id beside the attacker's key: refused too.
    client.feed(TOPICS.status, _status(
        CABINET, code_key=dict(ATTACKER.published(), key_id=CABINET.key_id)), retained=True)
    with pytest.raises(CodeKeyChanged):
        client.seal_codes("o-1", [("collect", "5830019274")])
    # The real key back: sealing works again (to the pin), the alarm stays raised.
    client.feed(TOPICS.status, _status(CABINET), retained=True)
    assert client.seal_codes("o-1", [("collect", "5830019274")])[0]["key_id"] == REAL.key_id
    assert client.code_key_changed is not None


async def test_pin_from_status_only_with_the_key_id_read_out_of_band() -> None:
    client = _client()
    with pytest.raises(LookupError):
        client.pin_from_status(CABINET.key_id)
    client.feed(TOPICS.status, _status(ATTACKER), retained=True)
    with pytest.raises(CodeKeyChanged) as caught:
        client.pin_from_status(CABINET.key_id)
    assert caught.value.seen_key_id == ATTACKER.key_id
    assert client.code_key_pin is None
    client.feed(TOPICS.status, _status(CABINET), retained=True)
    assert client.pin_from_status(CABINET.key_id) == REAL
    assert client.code_key_pin == REAL


# -- the clock before the first command ---------------------------------------------------


async def test_a_clock_from_a_retained_status_is_not_fresh_a_live_one_is() -> None:
    client = _client()
    assert not client.clock_is_fresh()
    client.feed(TOPICS.status, _status(CABINET), retained=True, at=100.0)
    assert client.clock.known
    assert not client.clock_is_fresh(now=100.0)
    client.feed(TOPICS.telemetry, {"cabinet_clock": {"boot_id": "b1", "uptime_ms": 5000}},
                at=101.0)
    assert client.clock_is_fresh(now=101.0)
    assert not client.clock_is_fresh(now=101.0 + 60)
