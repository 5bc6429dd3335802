"""Modbus TCP on a loopback port: the same bus, as an RS-485-to-Ethernet gateway serves it.

MBAP framing (transaction id, protocol 0, length, unit) around the same request PDUs the
RTU line carries; :meth:`~simulator.bus.SimBus.answer` does the rest. What a gateway does
with the line's faults, and so what this does:

* no reply on the line (silent board, unknown unit): no reply on TCP either (the client
  times out);
* a reply with a bad CRC, cut short, or two colliding replies: the gateway cannot
  check it and answers exception 0x0B (gateway target device failed to respond);
* timing emulation: the reply leaves when it would have come back on the RTU line
  (asyncio timers, so to the millisecond, not better; the precise line is the pty).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

from pymodbus.constants import ExcCodes

from drivers.modbus.registers import frame_time, silent_interval
from simulator.bus import SimBus, rtu_frame
from simulator.serving import LoopbackServer

__all__ = ["ModbusTcpGateway"]

log = logging.getLogger(__name__)
MBAP = struct.Struct(">HHHB")
#: Connections idle this long are closed (every wait is bounded).
IDLE_TIMEOUT_S = 600.0


class ModbusTcpGateway(LoopbackServer):
    """Serves one bus as Modbus TCP on ``host:port`` (port 0: any free one)."""

    def __init__(
        self, bus: SimBus, *, host: str = "127.0.0.1", port: int = 0, emulate_timing: bool = True
    ) -> None:
        super().__init__(host=host, port=port)
        self.bus = bus
        self.emulate_timing = emulate_timing

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await asyncio.wait_for(reader.readexactly(MBAP.size), IDLE_TIMEOUT_S)
            tid, protocol, length, unit = MBAP.unpack(header)
            if protocol != 0 or not 2 <= length <= 254:
                return  # not Modbus: drop the connection, as gateways do
            pdu = await asyncio.wait_for(reader.readexactly(length - 1), IDLE_TIMEOUT_S)
            reply = await self._transact(unit, pdu)
            if reply is not None:
                writer.write(MBAP.pack(tid, 0, len(reply) + 1, unit) + reply)
                await writer.drain()

    async def _transact(self, unit: int, pdu: bytes) -> bytes | None:
        started = time.perf_counter()
        answer = self.bus.answer(unit, pdu)
        if not answer.pdus:
            return None
        if len(answer.pdus) > 1 or answer.corrupt_crc or answer.truncate is not None:
            reply = bytes([(pdu[0] & 0x7F) | 0x80, ExcCodes.GATEWAY_NO_RESPONSE])
        else:
            reply = answer.pdus[0]
        delay = answer.latency_s
        if self.emulate_timing:
            baud = self.bus.baudrate
            request_len = len(rtu_frame(unit, pdu))
            delay += frame_time(request_len + len(reply) + 3, baud) + silent_interval(baud)
        remaining = started + delay - time.perf_counter()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return reply
