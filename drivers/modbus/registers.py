"""Register maps and RTU line arithmetic: pure functions and constants, no I/O.

Shared by the production driver and the simulator, so both sides agree on where a
board keeps what.

Waveshare-style Modbus RTU relay board (the "Modbus RTU Relay" family)
----------------------------------------------------------------------
Field knowledge, from the vendor's documentation and from boards on the bench:

* Relays are **coils** ``0x0000 + channel`` (function 01 read, 05 write one,
  15 write many). Coil ``0x00FF`` written with ``0xFF00`` switches *all* relays on,
  with ``0x0000`` all off (one transaction for "all outputs off").
* **Flash on** is function 05 on ``0x0200 + channel`` with the *value* being the pulse
  length in units of 100 ms (``0x0007`` = 700 ms): the board closes the relay and opens
  it again by itself. The reply echoes address and value. A daemon crash during the
  pulse cannot leave the solenoid energised. **Flash off** is ``0x0400 + channel``
  (relay opened, then closed again after the time), never used for locks.
* Inputs, on the boards that have them, are **discrete inputs** ``0x0000 + channel``
  (function 02), all read in one transaction.
* The device address is the **holding register** ``0x4000`` (function 03 reads it,
  function 06 writes it). Boards leave the factory at address 1: two new boards on one
  line answer the same frames, which garbles both replies. Re-address them one at a
  time, alone on the line, or by broadcast (address 0) with a single board attached.
* The firmware version is holding register ``0x8000`` (value 100 = V1.00).
* Unit addresses run 1..255 on these boards; 0 is broadcast (no reply). The Modbus
  specification reserves 248..255, but the relay boards accept them and independent
  masters use them, so the driver does too; a bus scan covers 1..247 unless asked for more.

Line timing
-----------
One character on the wire is 11 bits (start, 8 data, parity or a second stop bit,
stop). A frame ends after a silent interval of 3.5 character times; above 19200 baud
the specification fixes it at 1.75 ms. The shortest possible transaction is therefore
the request, a silent interval, the reply and another silent interval before the next
request may start: see :func:`transaction_time`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BITS_PER_CHAR",
    "MAX_UNIT",
    "STANDARD_MAX_UNIT",
    "WAVESHARE",
    "WaveshareMap",
    "char_time",
    "crc16",
    "frame_time",
    "read_bits_reply_len",
    "read_registers_reply_len",
    "silent_interval",
    "transaction_time",
]

BITS_PER_CHAR = 11
MAX_UNIT = 255
#: The last address the Modbus specification assigns (248..255 are reserved).
STANDARD_MAX_UNIT = 247
#: Request of a read function (01/02/03/04): unit, function, address (2), count (2), CRC (2).
READ_REQUEST_LEN = 8


@dataclass(frozen=True, slots=True)
class WaveshareMap:
    relay_coil_base: int = 0x0000
    all_relays_coil: int = 0x00FF
    flash_on_base: int = 0x0200
    flash_off_base: int = 0x0400
    flash_unit_s: float = 0.1
    flash_max_units: int = 0xFFFF
    input_base: int = 0x0000
    address_register: int = 0x4000
    version_register: int = 0x8000


WAVESHARE = WaveshareMap()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF). On the wire the low
    byte goes first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def char_time(baud: int) -> float:
    """Seconds one character occupies on the line."""
    if baud <= 0:
        raise ValueError(f"baud must be > 0, got {baud}")
    return BITS_PER_CHAR / baud


def frame_time(nbytes: int, baud: int) -> float:
    """Seconds a frame of ``nbytes`` occupies on the line."""
    return nbytes * char_time(baud)


def silent_interval(baud: int) -> float:
    """The inter-frame gap: 3.5 character times, fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baud > 19200 else 3.5 * char_time(baud)


def read_bits_reply_len(count: int) -> int:
    """Length of a reply to function 01/02 for ``count`` bits."""
    return 5 + (count + 7) // 8


def read_registers_reply_len(count: int) -> int:
    """Length of a reply to function 03/04 for ``count`` registers."""
    return 5 + 2 * count


def transaction_time(request_len: int, reply_len: int, baud: int) -> float:
    """The physical minimum of one request/reply transaction on an RTU line, including
    the silent interval after the request and the one after the reply."""
    return frame_time(request_len + reply_len, baud) + 2 * silent_interval(baud)
