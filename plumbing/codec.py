"""Optional payload encryption (AES-GCM), so secrets and personal data never sit in Temporal
history in clear. The worker, the CLI and `replay` all use the same codec."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

__all__ = ["AesGcmCodec", "codec_from_env"]

ENCODING = b"binary/encrypted-aes-gcm"


class AesGcmCodec(PayloadCodec):
    """Encrypts whole payloads; a payload it did not encrypt passes through untouched."""

    def __init__(self, key: bytes, key_id: str = "default") -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("SLIPWAY_CODEC_KEY must decode to 16, 24 or 32 bytes")
        self._aes = AESGCM(key)
        self._key_id = key_id.encode()

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            nonce = os.urandom(12)
            data = nonce + self._aes.encrypt(nonce, p.SerializeToString(), None)
            out.append(Payload(metadata={"encoding": ENCODING, "key-id": self._key_id}, data=data))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            plain = self._aes.decrypt(p.data[:12], p.data[12:], None)
            decoded = Payload()
            decoded.ParseFromString(plain)
            out.append(decoded)
        return out


def codec_from_env() -> AesGcmCodec | None:
    """SLIPWAY_CODEC_KEY (base64) or SLIPWAY_CODEC_KEY_FILE; None when neither is set."""
    raw = os.environ.get("SLIPWAY_CODEC_KEY")
    path = os.environ.get("SLIPWAY_CODEC_KEY_FILE")
    if not raw and path:
        raw = Path(path).read_text(encoding="utf-8").strip()
    if not raw:
        return None
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ValueError("SLIPWAY_CODEC_KEY is not valid base64") from exc
    return AesGcmCodec(key)
