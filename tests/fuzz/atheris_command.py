"""Coverage-guided fuzzing of the command decoder and verifier with atheris (optional).

Not a pytest module (pytest collects only ``test_*.py``) and atheris is not a project
dependency. To run it::

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/atheris_command.py -atheris_runs=200000
    .venv/bin/python tests/fuzz/atheris_command.py -max_total_time=300 corpus/

(any libFuzzer flag works; a directory argument keeps the corpus between runs). A crash
is any exception other than the refusals each function promises:

- ``decode_command``: only ``CommandRejected``;
- ``CommandVerifier.verify``: only ``AuthRejected``, and never a verified command for an
  input that does not carry dispatch's signature (``get_state`` may come plain);
- ``SignedCommand.inner`` after a successful decode: only ``CommandRejected``.

The seeds are a signed ``open`` and its plain form, so mutations start near valid input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

from controller.clock import CabinetClock
from controller.contract.errors import CommandRejected
from controller.contract.messages import SignedCommand, decode_command
from controller.security import AuthRejected, CommandVerifier, MemoryReplayStore
from controller.security.signing import generate_keypair, sign_command

CABINET = "cab-01"
BOOT = "4b7c0d1e-boot-0001"
NOW = CabinetClock(BOOT, 8_812_345)
PRIVATE_KEY, PUBLIC_KEY = generate_keypair()
SEED_COMMAND = {"id": "c-1", "type": "open", "cabinet": CABINET,
                "expires": {"boot_id": BOOT, "uptime_ms": NOW.uptime_ms + 10_000},
                "args": {"compartment": "A01", "reason": "customer_app"}}
SEEDS = [json.dumps(sign_command(SEED_COMMAND, PRIVATE_KEY, "dispatch-1")).encode(),
         json.dumps(SEED_COMMAND).encode()]
LOOP = asyncio.new_event_loop()


def one_input(data: bytes) -> None:
    try:
        decoded = decode_command(data)
    except CommandRejected:
        decoded = None
    if isinstance(decoded, SignedCommand):
        try:
            decoded.inner()
        except CommandRejected:
            pass
    verifier = CommandVerifier(CABINET, {"dispatch-1": PUBLIC_KEY}, lambda: NOW,
                               MemoryReplayStore())
    try:
        verified = LOOP.run_until_complete(verifier.verify(data))
    except AuthRejected:
        return
    if verified.is_signed:
        # Accepted as signed: the signature must really be dispatch's over that text.
        outer = json.loads(data)
        PUBLIC_KEY.verify(base64.b64decode(outer["sig"]),
                          outer["signed"].encode("utf-8"))
    elif verified.type != "get_state":
        raise AssertionError(f"unsigned {verified.type!r} accepted")


def main() -> None:
    import atheris  # only when run as a script: not a project dependency

    if not any(not a.startswith("-") for a in sys.argv[1:]):
        # No corpus directory given: start from the seeds through a temporary one.
        import tempfile
        from pathlib import Path

        corpus = Path(tempfile.mkdtemp(prefix="atheris-command-"))
        for i, seed in enumerate(SEEDS):
            (corpus / f"seed-{i}").write_bytes(seed)
        sys.argv.append(str(corpus))
    atheris.instrument_all()  # coverage feedback from the decoder and verifier
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
