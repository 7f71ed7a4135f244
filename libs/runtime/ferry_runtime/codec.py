"""Bus payloads: msgpack envelopes carrying a schema name and version.

Every message and KV value Ferry puts on NATS is ``{"schema": NAME, "v": N, "body": ...}``.
A reader accepts its own schema at any version up to the one it knows (fields it does not
know are ignored by the models), and refuses anything else with :class:`PayloadError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PayloadError(ValueError):
    """A payload that is not a Ferry envelope of the expected schema."""


@dataclass(frozen=True, slots=True)
class Schema(Generic[M]):
    """One kind of payload: its name, its current version and the model of its body."""

    name: str
    version: int
    model: type[M]

    def encode(self, body: M) -> bytes:
        envelope = {"schema": self.name, "v": self.version, "body": body.model_dump(mode="json")}
        packed: bytes = msgpack.packb(envelope, use_bin_type=True)
        return packed

    def decode(self, data: bytes) -> M:
        try:
            envelope: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise PayloadError(f"{self.name}: not msgpack ({exc})") from None
        if not isinstance(envelope, dict) or not {"schema", "v", "body"} <= envelope.keys():
            raise PayloadError(f"{self.name}: not a Ferry envelope")
        if envelope["schema"] != self.name:
            raise PayloadError(f"expected schema {self.name}, got {envelope['schema']!r}")
        version = envelope["v"]
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= self.version:
            raise PayloadError(
                f"{self.name}: unsupported version {version!r} (this reader knows 1..{self.version})"
            )
        try:
            return self.model.model_validate(envelope["body"])
        except ValidationError as exc:
            raise PayloadError(f"{self.name} v{version}: invalid body: {exc}") from None


class ErrorReply(BaseModel):
    """What a NATS responder answers instead of a result: an HTTP-like status and a message."""

    status: int
    message: str


ERROR_REPLY = Schema("ferry.error", 1, ErrorReply)
