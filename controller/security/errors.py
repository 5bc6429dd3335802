"""The security package's errors.

Error tree::

    SecurityError (Exception)
    ├── AuthRejected (ValueError)   a command refused before anything acted on it:
    │                               .code (RejectCode), .message, .field
    └── KeyFileError (ValueError)   a key file that cannot be used: wrong type, unreadable,
                                    or a private key readable by group/others

:class:`AuthRejected` is the only exception :meth:`CommandVerifier.verify` raises for a bad
input, whatever the input. Its message and field never quote key material and quote
unverified input only shortened.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AuthRejected", "KeyFileError", "RejectCode", "SecurityError"]


class RejectCode(StrEnum):
    """Why a command was refused by the verifier. The value is the wire string.

    Listed in the order the verifier checks them (``malformed`` can occur at two steps:
    the outer envelope before the signature, the inner command after it).
    """

    MALFORMED = "malformed"
    """Not a JSON object of the expected shape, bad base64, duplicate keys, too large."""
    UNAUTHENTICATED = "unauthenticated"
    """Unsigned, or signed form missing ``key_id``/``sig``, for a type that needs a signature."""
    UNKNOWN_KEY = "unknown_key"
    """``key_id`` names no key this cabinet trusts."""
    BAD_SIGNATURE = "bad_signature"
    """The signature does not verify over the exact UTF-8 bytes of ``signed``."""
    WRONG_CABINET = "wrong_cabinet"
    """The (authentic) command is addressed to another cabinet."""
    WRONG_SITE = "wrong_site"
    """The command (or the technician's grant) names another site, or no site."""
    REVOKED = "revoked"
    """The technician's grant is on the revocation list dispatch pushed."""
    GRANT_EXPIRED = "grant_expired"
    """The technician's grant is not valid at the cabinet's time (or lasts too long)."""
    FORBIDDEN = "forbidden"
    """The key's role may not send this command (a technician key and an ``assign``)."""
    WRONG_BOOT = "wrong_boot"
    """The deadline is in another boot's clock: the cabinet restarted since it was signed."""
    EXPIRED = "expired"
    """The deadline has passed in the cabinet's monotonic clock."""
    TOO_FAR_IN_FUTURE = "too_far_in_future"
    """The deadline lies more than 30 s ahead: the lifetime is longer than allowed."""
    REPLAYED = "replayed"
    """This command id was already accepted and its deadline has not passed yet."""


class SecurityError(Exception):
    """Root of the security package's errors."""


class AuthRejected(SecurityError, ValueError):
    """A command refused by the verifier; nothing acted on it.

    ``field`` is a dotted path into the signed form (``"sig"``, ``"key_id"``) or into the
    command (``"cabinet"``, ``"expires.uptime_ms"``) when one field is to blame.
    """

    def __init__(self, code: RejectCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        """The structured error of a reply: ``{"code", "message", "field"}``."""
        return {"code": self.code.value, "message": self.message, "field": self.field}

    def __repr__(self) -> str:
        return f"AuthRejected({self.code.value!r}, {self.message!r}, field={self.field!r})"


class KeyFileError(SecurityError, ValueError):
    """A key file that cannot be used; the message names the path, never the key."""
