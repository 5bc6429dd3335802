"""Command authentication: broker credentials alone never open a door.

- :mod:`~controller.security.verify`: the cabinet side. :class:`CommandVerifier` checks
  dispatch's Ed25519 signature over the exact bytes of a command, its cabinet, boot id,
  deadline (cabinet monotonic clock, at most 30 s ahead) and that its id was not accepted
  before; :data:`SIGNATURE_POLICY` says which command types must be signed.
- :mod:`~controller.security.replay`: the replay window and its persistence hook.
- :mod:`~controller.security.signing`: the dispatch side (keys, ``sign_command``, deadlines).

Error tree (:mod:`~controller.security.errors`)::

    SecurityError (Exception)
    ├── AuthRejected (ValueError)   .code: RejectCode, .message, .field
    └── KeyFileError (ValueError)

The broker side (mutual TLS, per-cabinet ACL) is in ``deploy/mosquitto`` and
``deploy/tls``; the threat model and what is tested where is ``docs/security.md``.
"""

from controller.security.errors import AuthRejected, KeyFileError, RejectCode, SecurityError
from controller.security.replay import (
    MemoryReplayStore,
    ReplayStore,
    ReplayWindow,
    SeenCommand,
)
from controller.security.verify import (
    MAX_COMMAND_LIFETIME_MS,
    SIGNATURE_POLICY,
    CommandVerifier,
    SignaturePolicy,
    VerifiedCommand,
    signature_policy,
)

__all__ = [
    "MAX_COMMAND_LIFETIME_MS",
    "SIGNATURE_POLICY",
    "AuthRejected",
    "CommandVerifier",
    "KeyFileError",
    "MemoryReplayStore",
    "RejectCode",
    "ReplayStore",
    "ReplayWindow",
    "SecurityError",
    "SeenCommand",
    "SignaturePolicy",
    "VerifiedCommand",
    "signature_policy",
]
