"""A lock board whose pulse acknowledgements are lost: the driver contract's
``PulseUnconfirmed``, on top of a fake board, for service tests.

``acts=True``: the frame reached the board and the solenoid moved (the fake records the
pulse and a connected door can be pulled); ``acts=False``: the frame was lost on the way.
Either way the driver cannot tell, and says so. Every other operation is the fake's own.
"""

from __future__ import annotations

from typing import Any

from drivers.base import PulseReceipt
from drivers.errors import PulseUnconfirmed
from drivers.fake import FakeLockBoard

__all__ = ["AckLost"]


class AckLost:
    def __init__(self, inner: FakeLockBoard, *, acts: bool = True, times: int = 1) -> None:
        self.inner = inner
        self.acts = acts
        self.remaining = times
        self.frames = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def pulse(self, channel: int, duration_s: float | None = None) -> PulseReceipt:
        self.frames += 1
        if self.remaining <= 0:
            return await self.inner.pulse(channel, duration_s)
        self.remaining -= 1
        duration = duration_s if duration_s is not None else 0.0
        if self.acts:
            receipt = await self.inner.pulse(channel, duration_s)
            duration = receipt.duration_s
        raise PulseUnconfirmed(
            "no reply to the pulse frame", bus=self.inner.bus, address=self.inner.address,
            channel=channel, duration_s=duration, sent_at=0.0,
            evidence="no reply to the flash write; coil read-back timed out")
