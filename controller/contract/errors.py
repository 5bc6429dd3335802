"""Structured command errors: the codes a reply carries, and the one exception decoding raises.

Error tree::

    ContractError (Exception)
    ├── CommandRejected (ValueError)   a command refused, with an ErrorCode, message, field
    └── InvalidTopic (ValueError)      a topic segment or root that cannot be used (topics.py)

Every refusal the cabinet sends to dispatch is an :class:`ErrorCode`; the list is part of
the MQTT contract (``docs/mqtt/README.md`` and the ``Reply`` schema), so dispatch can act on
the code and show the message. ``field`` is a dotted path into the command
(``"args.compartment"``, ``"expires.uptime_ms"``) when one field is to blame.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ERROR_DESCRIPTIONS", "CommandRejected", "ContractError", "ErrorCode"]


class ErrorCode(StrEnum):
    """Why a command was refused. The value is the wire string."""

    BAD_JSON = "bad_json"
    TOO_LARGE = "too_large"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_COMMAND = "unknown_command"
    EXPIRED = "expired"
    WRONG_CABINET = "wrong_cabinet"
    WRONG_BOOT = "wrong_boot"
    WRONG_SITE = "wrong_site"
    FORBIDDEN = "forbidden"
    UNKNOWN_COMPARTMENT = "unknown_compartment"
    UNKNOWN_ORDER = "unknown_order"
    UNKNOWN_ZONE = "unknown_zone"
    NO_COMPARTMENT = "no_compartment"
    BLOCKED = "blocked"
    UNAUTHENTICATED = "unauthenticated"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    STORE_FULL = "store_full"
    CONFLICT = "conflict"
    INVALID_CONFIG = "invalid_config"
    HARDWARE = "hardware"
    INTERNAL = "internal"


ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.BAD_JSON: "the payload is not UTF-8 JSON, has duplicate keys, NaN or is too deep",
    ErrorCode.TOO_LARGE: "the payload exceeds the cabinet's size limit",
    ErrorCode.INVALID_FIELD: "a field is missing, unknown, of the wrong type or out of range "
    "(also a signature that is not canonical base64, or signed text that is not UTF-8)",
    ErrorCode.UNKNOWN_COMMAND: "the type is not one the cabinet knows (plain or signed: read "
    "before the signature)",
    ErrorCode.EXPIRED: "the deadline has passed, or lies more than 30 s ahead (re-read the "
    "cabinet's clock and send again)",
    ErrorCode.WRONG_CABINET: "the command names another cabinet",
    ErrorCode.WRONG_SITE: "the command (or the technician's grant) names another site, or a "
    "signed command names no site",
    ErrorCode.FORBIDDEN: "the key may not send this command: its role does not allow it, or "
    "its grant is revoked or not valid at the cabinet's time",
    ErrorCode.WRONG_BOOT: "the deadline is in another boot's clock (the cabinet restarted)",
    ErrorCode.UNKNOWN_COMPARTMENT: "no such compartment in this cabinet",
    ErrorCode.UNKNOWN_ORDER: "no such order assigned in this cabinet",
    ErrorCode.UNKNOWN_ZONE: "no such temperature zone in this cabinet",
    ErrorCode.NO_COMPARTMENT: "no free compartment matches size, zone and pool",
    ErrorCode.BLOCKED: "the compartment is blocked for maintenance",
    ErrorCode.UNAUTHENTICATED: "this command must be signed and was not",
    ErrorCode.UNKNOWN_KEY: "the key_id names no key the cabinet trusts",
    ErrorCode.BAD_SIGNATURE: "the signature does not verify over the signed bytes",
    ErrorCode.REPLAYED: "this signed command id was already accepted and has no reply on "
    "record; it does not act again",
    ErrorCode.RATE_LIMITED: "too many commands, or this lock pulsed too recently (error."
    "retry_after_s: the seconds after which the request may be accepted)",
    ErrorCode.BUSY: "the cabinet cannot take this now (audit, commissioning); retry later",
    ErrorCode.STORE_FULL: "the cabinet's store refuses writes (its memory cap is reached): "
    "nothing was done and the command was not recorded; the store_full alarm is raised. Retry "
    "with the same id once the alarm clears",
    ErrorCode.CONFLICT: "the request contradicts the current state (e.g. already assigned), "
    "or its id was already used for another command",
    ErrorCode.INVALID_CONFIG: "apply_config: the resulting configuration is not valid",
    ErrorCode.HARDWARE: "the lock board did not make the pulse (no answer to a frame that did "
    "not act, a rejection, the bus down), or the compartment is in fault (the "
    "compartment_fault alarm; the message starts with compartment_fault), which refuses "
    "assign, deposit and collection opens until staff clear it; the action was not done. A "
    "pulse whose outcome is unknown is no refusal: it is an ok reply with "
    "result.pulse.outcome unconfirmed",
    ErrorCode.INTERNAL: "an unexpected fault in the cabinet (a bug). Before the command was "
    "recorded, nothing was done; while it acted, it is answered as interrupted, as after a "
    "crash (command_interrupted names any compartment that may have been pulsed), and never "
    "acted on again: a repeat of the id gets the same reply",
}


class ContractError(Exception):
    """Root of the contract package's errors."""


class CommandRejected(ContractError, ValueError):
    """A command refused with a structured error; it changed nothing.

    ``code`` is an :class:`ErrorCode`, ``message`` a sentence for a human (never contains a
    pickup code or secret), ``field`` the dotted path of the offending field or ``None``.
    ``command_id`` is the command's id when it could be read, so the reply can echo it.
    ``retry_after_s``: when the same request may be accepted again (``rate_limited``).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        *,
        command_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {message}" + (f" ({field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.command_id = command_id
        self.retry_after_s = retry_after_s
