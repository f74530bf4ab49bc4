"""Optional payload encryption (AES-GCM) with a key ring, so secrets and personal data never
sit in Temporal history in clear. The worker, the CLI and `replay` all use the same codec.

Each payload carries the id of the key that encrypted it; the first key of the ring encrypts,
every key of the ring decrypts, so a key can be rotated in without losing old histories. The
associated data binds the ciphertext to its encoding and key id: a payload whose metadata was
altered does not decrypt.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

__all__ = ["ENCODING", "AesGcmCodec", "CodecError", "codec_from_env"]

ENCODING = b"binary/encrypted-aes-gcm;v2"
# Written before key ids were bound into the associated data; still read.
LEGACY_ENCODING = b"binary/encrypted-aes-gcm"
# The id of the single SLIPWAY_CODEC_KEY (and of every payload written before key rings).
DEFAULT_KEY_ID = "default"
_NONCE = 12


class CodecError(ValueError):
    """A payload that cannot be decoded, or a codec configuration that cannot work."""


class AesGcmCodec(PayloadCodec):
    """Encrypts whole payloads with the ring's first key; decrypts with the key each payload
    names. A payload it did not encrypt passes through, unless `require_encrypted`."""

    def __init__(self, keys: Mapping[str, bytes], *, require_encrypted: bool = False) -> None:
        if not keys:
            raise CodecError("the codec key ring is empty")
        for key_id, key in keys.items():
            if not key_id or any(c in key_id for c in ",: "):
                raise CodecError(f"codec key id {key_id!r} must be non-empty, without , : or space")
            if len(key) not in (16, 24, 32):
                raise CodecError(f"codec key {key_id!r} must decode to 16, 24 or 32 bytes")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = next(iter(keys))
        self._require_encrypted = require_encrypted

    @staticmethod
    def _associated_data(encoding: bytes, key_id: bytes) -> bytes:
        return encoding + b"\x00" + key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self._current.encode()
        aad = self._associated_data(ENCODING, key_id)
        out = []
        for p in payloads:
            nonce = os.urandom(_NONCE)
            data = nonce + self._keys[self._current].encrypt(nonce, p.SerializeToString(), aad)
            out.append(Payload(metadata={"encoding": ENCODING, "key-id": key_id}, data=data))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(p) for p in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        encoding = payload.metadata.get("encoding", b"")
        if encoding not in (ENCODING, LEGACY_ENCODING):
            if self._require_encrypted:
                shown = encoding.decode(errors="replace")
                raise CodecError(
                    f"refusing a payload that is not encrypted (encoding {shown!r}): "
                    "SLIPWAY_CODEC_REQUIRE_ENCRYPTED is set"
                )
            return payload
        key_id = payload.metadata.get("key-id", DEFAULT_KEY_ID.encode())
        aes = self._keys.get(key_id.decode(errors="replace"))
        if aes is None:
            raise CodecError(
                f"payload encrypted with codec key {key_id.decode(errors='replace')!r}, which "
                f"is not in the key ring ({', '.join(self._keys)}): add it to SLIPWAY_CODEC_KEYS"
            )
        aad = self._associated_data(encoding, key_id) if encoding == ENCODING else None
        try:
            plain = aes.decrypt(payload.data[:_NONCE], payload.data[_NONCE:], aad)
        except InvalidTag:
            raise CodecError(
                f"payload does not decrypt with codec key {key_id.decode(errors='replace')!r}: "
                "wrong key, or its data or metadata were altered"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def _decode_key(where: str, raw: str) -> bytes:
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        raise CodecError(f"{where} is not valid base64") from None


def _from_variable_or_file(name: str) -> str:
    """The value of `name`, or the contents of the file `name`_FILE points to."""
    raw = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE")
    if not raw and path:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CodecError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return raw.strip()


def _key_ring(spec: str) -> dict[str, bytes]:
    """ "id2:base64,id1:base64" → ordered ring, first entry first."""
    ring: dict[str, bytes] = {}
    for entry in (e.strip() for e in spec.split(",")):
        key_id, sep, raw = entry.partition(":")
        if not entry or not sep:
            raise CodecError(f"SLIPWAY_CODEC_KEYS: {entry!r} is not `key-id:base64-key`")
        if key_id in ring:
            raise CodecError(f"SLIPWAY_CODEC_KEYS: key id {key_id!r} appears twice")
        ring[key_id] = _decode_key(f"SLIPWAY_CODEC_KEYS: key {key_id!r}", raw)
    return ring


def codec_from_env() -> AesGcmCodec | None:
    """The codec the environment configures; None when no key is set.

    SLIPWAY_CODEC_KEYS (or _FILE): `id2:base64,id1:base64`, the first key encrypts, all
    decrypt. SLIPWAY_CODEC_KEY (or _FILE): one base64 key, id `default`.
    SLIPWAY_CODEC_REQUIRE_ENCRYPTED=1: refuse payloads that are not encrypted."""
    ring_spec = _from_variable_or_file("SLIPWAY_CODEC_KEYS")
    single = _from_variable_or_file("SLIPWAY_CODEC_KEY")
    require = os.environ.get("SLIPWAY_CODEC_REQUIRE_ENCRYPTED", "").strip().lower()
    if require not in ("", "0", "1", "true", "false", "yes", "no"):
        raise CodecError(f"SLIPWAY_CODEC_REQUIRE_ENCRYPTED: {require!r} is not 1/0/true/false")
    require_encrypted = require in ("1", "true", "yes")
    if ring_spec and single:
        raise CodecError(
            "set SLIPWAY_CODEC_KEYS or SLIPWAY_CODEC_KEY, not both (to keep reading payloads "
            f"written with SLIPWAY_CODEC_KEY, put it in the ring as `{DEFAULT_KEY_ID}:<key>`)"
        )
    if ring_spec:
        return AesGcmCodec(_key_ring(ring_spec), require_encrypted=require_encrypted)
    if single:
        key = _decode_key("SLIPWAY_CODEC_KEY", single)
        if len(key) not in (16, 24, 32):
            raise CodecError("SLIPWAY_CODEC_KEY must decode to 16, 24 or 32 bytes")
        return AesGcmCodec({DEFAULT_KEY_ID: key}, require_encrypted=require_encrypted)
    if require_encrypted:
        raise CodecError(
            "SLIPWAY_CODEC_REQUIRE_ENCRYPTED is set but no key is: set SLIPWAY_CODEC_KEYS "
            "or SLIPWAY_CODEC_KEY"
        )
    return None
