"""ferry_runtime.codec: msgpack envelopes with a schema name and version."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from ferry_hostnet.model import INVENTORY, Inventory
from ferry_runtime.codec import ERROR_REPLY, ErrorReply, PayloadError, Schema
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.unit.strategies import inventories


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def envelope(schema: Any = "ferry.error", v: Any = 1, body: Any = None) -> bytes:
    return pack(
        {"schema": schema, "v": v, "body": {"status": 404, "message": "no"} if body is None else body}
    )


class BodyV3(BaseModel):
    name: str
    size: int = 0


V3 = Schema("test.thing", 3, BodyV3)

# -- round trips ------------------------------------------------------------------------------


@given(
    status=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    message=st.text(),
)
def test_error_reply_round_trip(status: int, message: str) -> None:
    reply = ErrorReply(status=status, message=message)
    assert ERROR_REPLY.decode(ERROR_REPLY.encode(reply)) == reply


@given(inventories)
def test_inventory_round_trip(inventory: Inventory) -> None:
    decoded = INVENTORY.decode(INVENTORY.encode(inventory))
    assert decoded == inventory
    assert decoded.same_as(inventory)


def test_envelope_layout() -> None:
    data = ERROR_REPLY.encode(ErrorReply(status=503, message="down"))
    assert msgpack.unpackb(data, raw=False) == {
        "schema": "ferry.error",
        "v": 1,
        "body": {"status": 503, "message": "down"},
    }


# -- versions and schema names ------------------------------------------------------------------


@pytest.mark.parametrize("v", [1, 2, 3])
def test_versions_up_to_the_readers_are_accepted(v: int) -> None:
    assert V3.decode(pack({"schema": "test.thing", "v": v, "body": {"name": "x"}})) == BodyV3(name="x")


@pytest.mark.parametrize(
    "v",
    [
        4,
        100,
        0,
        -1,
        "1",
        1.0,
        None,
        [1],
        True,
    ],
)
def test_unsupported_versions_are_refused(v: Any) -> None:
    with pytest.raises(PayloadError, match="unsupported version"):
        V3.decode(pack({"schema": "test.thing", "v": v, "body": {"name": "x"}}))


def test_newer_version_of_error_reply_refused() -> None:
    with pytest.raises(
        PayloadError, match=r"ferry\.error: unsupported version 2 \(this reader knows 1\.\.1\)"
    ):
        ERROR_REPLY.decode(envelope(v=2))


def test_unknown_body_fields_of_newer_writers_are_ignored() -> None:
    data = pack({"schema": "test.thing", "v": 2, "body": {"name": "x", "size": 3, "colour": "red"}})
    assert V3.decode(data) == BodyV3(name="x", size=3)


@pytest.mark.parametrize("schema", ["ferry.inventory", "ferry.error.v2", "", "FERRY.ERROR", None, 1])
def test_wrong_schema_name_refused(schema: Any) -> None:
    with pytest.raises(PayloadError, match=r"expected schema ferry\.error"):
        ERROR_REPLY.decode(envelope(schema=schema))


def test_inventory_reader_refuses_an_error_reply() -> None:
    with pytest.raises(PayloadError, match=r"expected schema ferry\.inventory, got 'ferry\.error'"):
        INVENTORY.decode(ERROR_REPLY.encode(ErrorReply(status=1, message="x")))


# -- garbage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x91",  # an array of one element, truncated
        b"\xa1\xff",  # a str that is not UTF-8
        b"\x81\x01\x02",  # a map with an integer key
        b"\xc7\x03\xff\x00\x00\x00",  # a timestamp extension of the wrong length
        pack({"schema": "ferry.error"}) + b"\x00",  # extra data after the envelope
        b'{"schema": "ferry.error"}',  # JSON, not msgpack
        b"\x91" * 5000 + b"\xc0",  # nested deeper than the unpacker allows
        b"\xdd\xff\xff\xff\xff",  # an array claiming four billion elements
    ],
)
def test_non_msgpack_bytes_refused(data: bytes) -> None:
    with pytest.raises(PayloadError, match=r"ferry\.error: not msgpack"):
        ERROR_REPLY.decode(data)


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        "ferry.error",
        b"bytes",
        [1, 2, 3],
        ["ferry.error", 1, {"status": 1, "message": "x"}],
        {},
        {"schema": "ferry.error", "v": 1},
        {"schema": "ferry.error", "body": {"status": 1, "message": "x"}},
        {"v": 1, "body": {"status": 1, "message": "x"}},
        {b"schema": "ferry.error", b"v": 1, b"body": {}},
    ],
)
def test_msgpack_that_is_not_an_envelope_refused(value: Any) -> None:
    with pytest.raises(PayloadError, match="not a Ferry envelope"):
        ERROR_REPLY.decode(pack(value))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "not a number", "message": "x"},
        {"status": 1},
        [404, "no"],
        "404 no",
        {"status": 1, "message": None},
    ],
)
def test_invalid_body_refused(body: Any) -> None:
    with pytest.raises(PayloadError, match=r"ferry\.error v1: invalid body"):
        ERROR_REPLY.decode(envelope(body=body))


def check_decode(schema: Schema[Any], data: bytes) -> None:
    """Decoding either succeeds with the schema's model or raises PayloadError; nothing else."""
    try:
        result = schema.decode(data)
    except PayloadError:
        return
    assert isinstance(result, schema.model)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_payload_error(data: bytes) -> None:
    check_decode(ERROR_REPLY, data)
    check_decode(INVENTORY, data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    schema=st.sampled_from(["ferry.error", "ferry.inventory", "other"]) | msgpack_values,
    v=st.integers(-3, 5) | msgpack_values,
    body=msgpack_values
    | st.fixed_dictionaries({"status": msgpack_values, "message": msgpack_values})
    | st.fixed_dictionaries(
        {"host": msgpack_values, "interfaces": msgpack_values, "collected_at": msgpack_values}
    ),
)
def test_envelope_shaped_payloads_decode_or_raise_payload_error(schema: Any, v: Any, body: Any) -> None:
    data = pack({"schema": schema, "v": v, "body": body})
    check_decode(ERROR_REPLY, data)
    check_decode(INVENTORY, data)


@given(msgpack_values, st.binary(max_size=8))
def test_mangled_msgpack_decodes_or_raises_payload_error(value: Any, tail: bytes) -> None:
    data = pack(value)
    for candidate in (data, data[: len(data) // 2], data + tail, tail + data):
        check_decode(ERROR_REPLY, candidate)
        check_decode(INVENTORY, candidate)


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)
