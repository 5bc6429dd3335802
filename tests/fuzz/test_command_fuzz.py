"""Fuzzing the whole command path: ``CommandService.handle`` on a cabinet built from the
daemon's real classes (:mod:`tests.fuzz.cabinet`), fed arbitrary bytes, arbitrary JSON,
command-shaped objects and mutations of validly signed commands.

Properties, for every input:

- ``handle`` returns (never raises) a payload that validates against the ``Reply`` model;
- a refusal is structured (a known wire code, a message) and never ``internal`` (that code
  means an exception escaped a check);
- a refusal changes nothing: no pulse or output switching on any board, no compartment
  record, no model change, no outbox event, no command record;
- something acts only for a command validly signed by dispatch (``get_state`` may come plain,
  and it only reads), and then it is exactly the command dispatch signed.

Bounded: a fixed number of examples, no deadline, no timed assertion.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controller.contract.errors import ErrorCode
from controller.contract.messages import COMMAND_TYPES, Reply, from_json
from controller.security.signing import generate_keypair
from tests.fuzz.cabinet import KEY_ID, FuzzCabinet, Picture, dispatch_key

FUZZ = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OTHER_KEY, _ = generate_keypair()


def actuation(picture: Picture) -> tuple[Any, ...]:
    """The parts of a picture that a read-only command must leave alone."""
    return (picture.pulses, picture.output_switching, picture.compartments, picture.model,
            picture.outbox_depth, picture.events_emitted)


def check_reply(raw: bytes) -> Reply:
    reply = from_json(Reply, raw)
    if not reply.ok:
        assert reply.error is not None
        assert reply.error.code in set(ErrorCode)
        assert reply.error.message
        assert reply.error.code is not ErrorCode.INTERNAL, reply
    return reply


def signed_by_dispatch(payload: bytes) -> dict[str, Any] | None:
    """The inner command when ``payload`` carries a signature by dispatch's key over its
    ``signed`` text (checked independently of the cabinet's verifier), else ``None``."""
    try:
        outer = json.loads(payload)
        text, sig = outer["signed"], base64.b64decode(outer["sig"], validate=True)
        dispatch_key().public_key().verify(sig, text.encode("utf-8"))
        inner = json.loads(text)
    except Exception:
        return None
    return inner if isinstance(inner, dict) else None


async def run_one(payload: bytes, prepare: Any = None) -> tuple[Reply, Picture, Picture,
                                                                  FuzzCabinet]:
    async with FuzzCabinet() as cab:
        if prepare is not None:
            await prepare(cab)
        before = await cab.observe()
        reply = check_reply(await cab.service.handle(payload))
        after = await cab.observe()
        return reply, before, after, cab


def assert_only_authorised_effects(payload: bytes, reply: Reply, before: Picture,
                                   after: Picture) -> None:
    if not reply.ok:
        assert after == before, f"a refused command changed something: {reply}"
        return
    inner = signed_by_dispatch(payload)
    if inner is None:
        # Accepted unsigned: only get_state may be, and it only reads.
        plain = json.loads(payload)
        assert plain.get("type") == "get_state", reply
        assert actuation(after) == actuation(before)
    else:
        assert reply.id == inner["id"]


# -- arbitrary input ------------------------------------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_and_change_nothing(payload: bytes) -> None:
    reply, before, after, _ = asyncio.run(run_one(payload))
    assert not reply.ok
    assert after == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)


@FUZZ
@given(document=JSON)
def test_arbitrary_json_changes_nothing_unless_signed(document: Any) -> None:
    payload = json.dumps(document).encode()
    reply, before, after, _ = asyncio.run(run_one(payload))
    assert_only_authorised_effects(payload, reply, before, after)


COMPARTMENTS = st.sampled_from(["A01", "A02", "B01", "C03", "Z99", "a01", ""])
ARGS = st.fixed_dictionaries({}, optional={
    "compartment": COMPARTMENTS | JSON,
    "reason": st.sampled_from(["staff", "deposit", "collect", "customer_app", "x"]) | JSON,
    "order_id": st.sampled_from(["o-1", "o-2"]) | JSON,
    "size": st.sampled_from(["S", "M", "L", "XL"]),
    "zone": st.sampled_from(["ambient", "chilled", "frozen", "nowhere"]),
    "pool": st.sampled_from(["grocery", "parcel", "shop", "none"]),
    "config": st.dictionaries(st.text(max_size=8), JSON, max_size=3),
})


@st.composite
def command_shaped(draw: st.DrawFn, cab_id: str = "cab-sim-01") -> dict[str, Any]:
    """Objects close to a real command, with any field possibly missing, wrong or extra."""
    command: dict[str, Any] = {
        "id": draw(st.sampled_from(["c-1", "c-2", "x" * 65, ""]) | st.from_regex(
            r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)),
        "type": draw(st.sampled_from([*COMMAND_TYPES, "open_all", "commission", "set_codes",
                                      "OPEN", ""])),
        "cabinet": draw(st.sampled_from([cab_id, "cab-other", ""]) | JSON),
        "expires": draw(st.fixed_dictionaries({}, optional={
            "boot_id": st.sampled_from(["unknown-boot-0001"]) | JSON,
            "uptime_ms": st.integers(-1, 10**12) | JSON,
        })),
        "args": draw(ARGS | JSON),
    }
    for key in draw(st.lists(st.sampled_from(list(command)), max_size=2, unique=True)):
        del command[key]
    command.update(draw(st.dictionaries(st.sampled_from(["extra", "sig", "key_id", "signed"]),
                                        JSON, max_size=2)))
    return command


@FUZZ
@given(command=command_shaped())
def test_command_shaped_objects_never_act_unsigned(command: dict[str, Any]) -> None:
    payload = json.dumps(command).encode()
    reply, before, after, _ = asyncio.run(run_one(payload))
    assert_only_authorised_effects(payload, reply, before, after)


@FUZZ
@given(data=st.data(), type_=st.sampled_from([t for t in COMMAND_TYPES if t != "get_state"]))
def test_well_formed_unsigned_commands_of_every_guarded_type_are_unauthenticated(
    data: st.DataObject, type_: str,
) -> None:
    table: dict[str, dict[str, Any]] = {
        "open": {"compartment": "A01", "reason": "staff"},
        "assign": {"order_id": "o-1", "size": "M", "zone": "ambient", "pool": "grocery"},
        "release": {"compartment": "A01"},
        "block": {"compartment": "A01", "reason": "test"},
        "unblock": {"compartment": "A01", "reason": "test"},
        "clear_fault": {"compartment": "A01", "reason": "test"},
        "apply_config": {"config": {}},
        "clear_lane_lockout": {"lane": "lane-1", "reason": "test"},
        "revoke_grants": {"serial": 1, "revoked": []},
    }
    args = table[type_]

    async def scenario() -> tuple[Reply, Picture, Picture]:
        async with FuzzCabinet() as cab:
            command = cab.command(type_, args, command_id=data.draw(
                st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True), label="id"))
            before = await cab.observe()
            reply = check_reply(await cab.service.handle(json.dumps(command).encode()))
            return reply, before, await cab.observe()

    reply, before, after = asyncio.run(scenario())
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.code is ErrorCode.UNAUTHENTICATED
    assert after == before


# -- mutations of a validly signed command --------------------------------------------------


@st.composite
def byte_edits(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with one to four random byte insertions, deletions, replacements or bit flips."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "flip"]))
        index = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "insert":
            data.insert(index, draw(st.integers(0, 255)))
        elif not data:
            continue
        elif kind == "delete":
            del data[index]
        elif kind == "replace":
            data[index] = draw(st.sampled_from(b'"\\{}[],:0123456789ABZaz -\x00\xff'))
        else:
            data[index] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def _signed_open(cab: FuzzCabinet, compartment: str = "A01") -> tuple[bytes, dict[str, str]]:
    message = cab.sign(cab.command("open", {"compartment": compartment, "reason": "staff"},
                                   command_id="c-fuzz-open-1"))
    return json.dumps(message).encode(), message


@FUZZ
@given(data=st.data())
def test_mutated_signed_commands_act_only_as_signed(data: st.DataObject) -> None:
    async def scenario() -> None:
        async with FuzzCabinet() as cab:
            raw, message = _signed_open(cab)
            mutated = data.draw(byte_edits(raw), label="mutated")
            before = await cab.observe()
            reply = check_reply(await cab.service.handle(mutated))
            after = await cab.observe()
            if not reply.ok:
                assert after == before, reply
                return
            # It acted: the signature must be dispatch's over exactly the original text.
            inner = signed_by_dispatch(mutated)
            assert inner is not None, mutated
            assert json.loads(mutated)["signed"] == message["signed"]
            locks = cab.boards()["locks-a"]
            locks.assert_pulsed(0, times=1)  # A01, nothing else
            assert sum(len(b.pulses()) for b in cab.boards().values()) == 1

    asyncio.run(scenario())


@FUZZ
@given(data=st.data())
def test_structured_tampering_inside_signed_is_a_bad_signature(data: st.DataObject) -> None:
    async def scenario() -> None:
        async with FuzzCabinet() as cab:
            _, message = _signed_open(cab)
            command = json.loads(message["signed"])
            field = data.draw(st.sampled_from(["compartment", "type", "cabinet", "id",
                                               "uptime_ms", "reason"]), label="field")
            if field == "compartment":
                command["args"]["compartment"] = data.draw(
                    st.sampled_from(["A02", "A03", "B01", "C01"]))
            elif field == "reason":
                command["args"]["reason"] = "deposit"
            elif field == "type":
                command["type"] = "block"
                command["args"] = {"compartment": "A01", "reason": "x"}
            elif field == "cabinet":
                command["cabinet"] = "cab-sim-02"
            elif field == "id":
                command["id"] = "c-fuzz-open-2"
            else:
                command["expires"]["uptime_ms"] += data.draw(st.integers(1, 20_000))
            tampered = {**message, "signed": json.dumps(command, separators=(",", ":"))}
            before = await cab.observe()
            reply = check_reply(await cab.service.handle(json.dumps(tampered).encode()))
            assert not reply.ok
            assert reply.error is not None
            assert reply.error.code is ErrorCode.BAD_SIGNATURE, reply
            assert await cab.observe() == before

    asyncio.run(scenario())


@FUZZ
@given(data=st.data())
def test_after_a_command_acted_no_mutation_of_it_acts_again(data: st.DataObject) -> None:
    async def scenario() -> None:
        async with FuzzCabinet() as cab:
            raw, _message = _signed_open(cab)
            first = check_reply(await cab.service.handle(raw))
            assert first.ok
            after_first = await cab.observe()
            for _ in range(data.draw(st.integers(1, 4), label="copies")):
                mutated = data.draw(st.just(raw) | byte_edits(raw), label="copy")
                reply = check_reply(await cab.service.handle(mutated))
                if mutated == raw:
                    # The same bytes: the first reply again, word for word.
                    assert reply == first
                elif reply.ok:
                    # An equivalent envelope: answered like the first, nothing more done.
                    assert reply.id == first.id
                assert actuation(await cab.observe()) == actuation(after_first)
            cab.boards()["locks-a"].assert_pulsed(0, times=1)

    asyncio.run(scenario())


@FUZZ
@given(key=st.sampled_from(["other-key", "same-id-other-key"]), data=st.data())
def test_signatures_by_any_other_key_never_act(key: str, data: st.DataObject) -> None:
    async def scenario() -> None:
        async with FuzzCabinet() as cab:
            command = cab.command("open", {"compartment": data.draw(COMPARTMENTS),
                                           "reason": "staff"})
            key_id = KEY_ID if key == "same-id-other-key" else data.draw(
                st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True))
            message = cab.sign(command, OTHER_KEY, key_id)
            before = await cab.observe()
            reply = check_reply(await cab.service.handle(json.dumps(message).encode()))
            assert not reply.ok
            assert reply.error is not None
            assert await cab.observe() == before
            # A compartment id the contract cannot read is refused before the signature.
            expected = ErrorCode.BAD_SIGNATURE if key_id == KEY_ID else ErrorCode.UNKNOWN_KEY
            assert reply.error.code in (expected, ErrorCode.INVALID_FIELD), reply

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed_text=st.text(max_size=200) | JSON.map(json.dumps))
def test_garbage_signed_by_dispatch_is_refused_cleanly(signed_text: str) -> None:
    # Arbitrary text with dispatch's valid signature: authentic, but not a command.
    assume(signed_text.strip() != "")
    sig = dispatch_key().sign(signed_text.encode("utf-8", "surrogatepass"))
    payload = json.dumps({"signed": signed_text, "key_id": KEY_ID,
                          "sig": base64.b64encode(sig).decode()}).encode()
    reply, before, after, _ = asyncio.run(run_one(payload))
    assert_only_authorised_effects(payload, reply, before, after)


@settings(max_examples=300, deadline=None)
@given(text=st.text(), ascii_only=st.booleans())
def test_the_verifier_and_the_contract_read_the_same_signed_text(
    text: str, ascii_only: bool,
) -> None:
    # The verifier checks the signature over json.loads' reading of "signed"; the service
    # acts on the contract's (msgspec's) reading. They must never differ.
    from controller.contract.messages import SignedCommand

    outer = json.dumps({"signed": text, "key_id": KEY_ID, "sig": "A" * 86 + "=="},
                       ensure_ascii=ascii_only)
    try:
        verifier_text = json.loads(outer)["signed"]
        contract_text = from_json(SignedCommand, outer).signed
    except ValueError:
        return
    assert contract_text == verifier_text
