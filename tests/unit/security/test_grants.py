"""A grant's signed text is read as strictly as a command's: a text that two readers could
read two ways is refused, even under a valid root signature."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.security.errors import AuthRejected, RejectCode
from controller.security.grants import RevocationList, check_grant

ROOT = Ed25519PrivateKey.generate()
TECH = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
NOW = int(time.time())


def _signed(text: str) -> dict[str, str]:
    return {"signed": text, "key_id": "d1",
            "sig": base64.b64encode(ROOT.sign(text.encode())).decode()}


def _body(**fields: str) -> str:
    base = {"grant": '"g-1"', "role": '"technician"', "key_id": '"tech-1"',
            "public_key": f'"{TECH}"', "site": '"s-1"', "not_before": str(NOW - 60),
            "not_after": str(NOW + 3600)}
    base.update(fields)
    return "{" + ",".join(f'"{k}":{v}' for k, v in base.items()) + "}"


def _check(text: str) -> str:
    return check_grant(_signed(text), {"d1": ROOT.public_key()}, site="s-1", now_s=NOW,
                       revoked=RevocationList()).grant_id


def test_the_well_formed_grant_is_taken() -> None:
    assert _check(_body()) == "g-1"


@pytest.mark.parametrize("text", [
    _body()[:-1] + ',"site":"s-2"}',      # a second site: which one is checked?
    _body()[:-1] + ',"grant":"g-2"}',     # a second id: which one is revoked?
    _body(not_after="NaN"),
    _body(not_after="Infinity"),
])
def test_a_signed_text_read_two_ways_is_refused(text: str) -> None:
    with pytest.raises(AuthRejected) as err:
        _check(text)
    assert err.value.code is RejectCode.MALFORMED
    assert err.value.field == "grant"
    assert "grant signed text" in err.value.message
