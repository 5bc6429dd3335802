"""The MQTT contract as value objects: topics and payload models, checked without a broker.

- :mod:`controller.contract.topics`: ``CabinetTopics`` (one cabinet's six topics) and
  ``DispatchFilters`` (wildcard filters for the dispatch side).
- :mod:`controller.contract.messages`: msgspec structs of every payload and
  ``decode_command``, the only way untrusted ``cmd`` bytes become a command.
- :mod:`controller.contract.errors`: ``ErrorCode`` and ``CommandRejected``.
- :mod:`controller.contract.schemagen`: writes ``controller/schemas/*.json`` from the models.

The human-facing contract is ``docs/mqtt/README.md`` and ``docs/mqtt/asyncapi.yaml``.
"""

from controller.contract.errors import CommandRejected, ContractError, ErrorCode
from controller.contract.messages import (
    ClockReading,
    Command,
    Event,
    Reply,
    ReplyError,
    SignedCommand,
    State,
    Status,
    Telemetry,
    decode_command,
    encode,
)
from controller.contract.topics import CabinetTopics, Channel, DispatchFilters, InvalidTopic

__all__ = [
    "CabinetTopics",
    "Channel",
    "ClockReading",
    "Command",
    "CommandRejected",
    "ContractError",
    "DispatchFilters",
    "ErrorCode",
    "Event",
    "InvalidTopic",
    "Reply",
    "ReplyError",
    "SignedCommand",
    "State",
    "Status",
    "Telemetry",
    "decode_command",
    "encode",
]
