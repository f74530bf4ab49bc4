"""Payload encryption: what the worker, the CLI and replay share."""

from __future__ import annotations

import base64
import os

import pytest
from temporalio.api.common.v1 import Payload

from plumbing.codec import AesGcmCodec, codec_from_env
from plumbing.connection import data_converter
from workflows.messages import Decision


async def test_payloads_are_encrypted_and_come_back_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", key)
    converter = data_converter()
    decision = Decision(approver="carol", gate="production", comment="born 1990-01-02")
    encoded = await converter.encode([decision])
    assert b"carol" not in encoded[0].data
    assert b"1990-01-02" not in encoded[0].data
    assert encoded[0].metadata["encoding"] == b"binary/encrypted-aes-gcm"
    (back,) = await converter.decode(encoded, [Decision])
    assert back == decision


async def test_unencrypted_payloads_pass_through() -> None:
    codec = AesGcmCodec(os.urandom(16))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')
    assert await codec.decode([plain]) == [plain]


def test_a_bad_key_is_refused_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="SLIPWAY_CODEC_KEY must decode to 16, 24 or 32 bytes"):
        codec_from_env()
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", "not base64!!")
    with pytest.raises(ValueError, match="SLIPWAY_CODEC_KEY is not valid base64"):
        codec_from_env()
