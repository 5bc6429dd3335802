"""The pickup-code rule as docs/mqtt/README.md publishes it: its test vectors, read from
the document itself, are what the cabinet's code computes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

from controller.domain.codes import PickupCode
from controller.security.codes import CodeKey, key_id_of, seal_code

README = (Path(__file__).resolve().parents[3] / "docs" / "mqtt" / "README.md").read_text()
SECTION = README.split("### Pickup codes", 1)[1].split("\n### ", 1)[0]


def _cell(label: str) -> str:
    match = re.search(r"^\| " + re.escape(label) + r" \| (.+?) \|$", SECTION, re.M)
    assert match, label
    return match.group(1).strip("`").split("` = `")[-1]


def test_the_documented_vectors_are_what_the_code_computes() -> None:
    cabinet = CodeKey(bytes(range(32)), b"\x11" * 32, b"\x22" * 16)
    ephemeral = bytes(range(32, 64))
    public = cabinet.public_bytes

    assert base64.b64encode(public).decode() == _cell("`public_key`")
    assert key_id_of(public) == _cell("`key_id`")
    for code, code_id in (("4820193375", "collect-0"), ("K7QW2M9XTR4PZ8HA", "deposit-1")):
        entry = seal_code(public, "cab-01", "ord-88412", code_id, code_id.split("-")[0], code,
                          ephemeral=ephemeral)
        assert entry["epk"] == _cell("`epk`")
        assert entry["sealed"] == _cell(f"code `{code}`, `{code_id}`")


def test_the_documented_verifier_and_normalisation() -> None:
    key = CodeKey(bytes(range(32)), b"\x11" * 32, b"\x22" * 16)
    vectors = re.findall(r"^\| `([0-9A-Z]+)`[^|]* \| `([0-9a-f]{32})` \|$", SECTION, re.M)
    assert len(vectors) == 2
    for code, digest in vectors:
        assert key.verifier(code.encode("ascii")) == digest
        stretched = hashlib.scrypt(code.encode("ascii"), salt=b"\x22" * 16, n=16384, r=8,
                                   p=1, maxmem=2**28, dklen=32)
        assert hmac.new(b"\x11" * 32, b"locker-code-verifier/1\x00" + stretched,
                        "sha256").hexdigest()[:32] == digest
    # What is hashed: the normalised code (spaces and dashes dropped, upper case), ASCII.
    assert PickupCode(" k7qw-2m9x tr4p-z8ha ").secret_bytes() == b"K7QW2M9XTR4PZ8HA"
