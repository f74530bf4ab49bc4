"""Payload encryption: what the worker, the CLI and replay share. Keys rotate through a ring,
metadata is bound to the ciphertext, plaintext can be refused."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload

from contracts.messages import Decision
from plumbing.codec import ENCODING, LEGACY_ENCODING, AesGcmCodec, CodecError, codec_from_env
from plumbing.connection import data_converter

DECISION = Decision(approver="carol", gate="production", comment="born 1990-01-02")
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture(autouse=True)
def _no_codec_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEY", "KEY_FILE", "KEYS", "KEYS_FILE", "REQUIRE_ENCRYPTED"):
        monkeypatch.delenv(f"SLIPWAY_CODEC_{name}", raising=False)


async def test_payloads_are_encrypted_and_come_back_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", b64(os.urandom(32)))
    converter = data_converter()
    encoded = await converter.encode([DECISION])
    assert b"carol" not in encoded[0].data
    assert b"1990-01-02" not in encoded[0].data
    assert encoded[0].metadata["encoding"] == ENCODING
    assert encoded[0].metadata["key-id"] == b"default"
    (back,) = await converter.decode(encoded, [Decision])
    assert back == DECISION


async def test_a_new_key_encrypts_and_old_keys_still_decrypt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = os.urandom(32), os.urandom(16)
    monkeypatch.setenv("SLIPWAY_CODEC_KEYS", f"k1:{b64(old)}")
    before = await data_converter().encode([DECISION])
    assert before[0].metadata["key-id"] == b"k1"

    monkeypatch.setenv("SLIPWAY_CODEC_KEYS", f"k2:{b64(new)}, k1:{b64(old)}")
    rotated = data_converter()
    after = await rotated.encode([DECISION])
    assert after[0].metadata["key-id"] == b"k2"
    assert await rotated.decode(before + after, [Decision, Decision]) == [DECISION, DECISION]

    # A reader that lacks the new key says which key it needs.
    monkeypatch.setenv("SLIPWAY_CODEC_KEYS", f"k1:{b64(old)}")
    with pytest.raises(CodecError, match="codec key 'k2', which is not in the key ring"):
        await data_converter().decode(after, [Decision])


async def test_metadata_is_bound_to_the_ciphertext() -> None:
    key = os.urandom(32)
    # Two ids for the same key bytes: only the associated data tells them apart.
    codec = AesGcmCodec({"a": key, "b": key})
    (payload,) = await codec.encode([PLAIN])
    assert await codec.decode([payload]) == [PLAIN]

    relabelled = Payload(metadata={**payload.metadata, "key-id": b"b"}, data=payload.data)
    with pytest.raises(CodecError, match="does not decrypt with codec key 'b'"):
        await codec.decode([relabelled])
    downgraded = Payload(
        metadata={**payload.metadata, "encoding": LEGACY_ENCODING}, data=payload.data
    )
    with pytest.raises(CodecError, match="altered"):
        await codec.decode([downgraded])
    flipped = bytearray(payload.data)
    flipped[-1] ^= 1
    with pytest.raises(CodecError, match="altered"):
        await codec.decode([Payload(metadata=payload.metadata, data=bytes(flipped))])


async def test_payloads_written_before_key_rings_still_decrypt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The format of the first codec: no associated data, key id `default`.
    key, nonce = os.urandom(32), os.urandom(12)
    legacy = Payload(
        metadata={"encoding": LEGACY_ENCODING, "key-id": b"default"},
        data=nonce + AESGCM(key).encrypt(nonce, PLAIN.SerializeToString(), None),
    )
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", b64(key))
    codec = codec_from_env()
    assert codec is not None
    assert await codec.decode([legacy]) == [PLAIN]
    # Rotated: the old single key joins the ring under its id.
    monkeypatch.delenv("SLIPWAY_CODEC_KEY")
    monkeypatch.setenv("SLIPWAY_CODEC_KEYS", f"2026:{b64(os.urandom(32))},default:{b64(key)}")
    codec = codec_from_env()
    assert codec is not None
    assert await codec.decode([legacy]) == [PLAIN]


async def test_plaintext_passes_unless_encryption_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", b64(os.urandom(16)))
    lenient = codec_from_env()
    assert lenient is not None
    assert await lenient.decode([PLAIN]) == [PLAIN]

    monkeypatch.setenv("SLIPWAY_CODEC_REQUIRE_ENCRYPTED", "1")
    strict = codec_from_env()
    assert strict is not None
    with pytest.raises(CodecError, match="refusing a payload that is not encrypted"):
        await strict.decode([PLAIN])
    (encrypted,) = await strict.encode([PLAIN])
    assert await strict.decode([encrypted]) == [PLAIN]


def test_bad_settings_are_refused_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", b64(b"short"))
    with pytest.raises(CodecError, match="SLIPWAY_CODEC_KEY must decode to 16, 24 or 32 bytes"):
        codec_from_env()
    monkeypatch.setenv("SLIPWAY_CODEC_KEY", "not base64!!")
    with pytest.raises(CodecError, match="SLIPWAY_CODEC_KEY is not valid base64"):
        codec_from_env()
    monkeypatch.setenv("SLIPWAY_CODEC_KEYS", f"k1:{b64(os.urandom(32))}")
    with pytest.raises(CodecError, match="set SLIPWAY_CODEC_KEYS or SLIPWAY_CODEC_KEY, not both"):
        codec_from_env()
    monkeypatch.delenv("SLIPWAY_CODEC_KEY")
    for ring, message in [
        (b64(os.urandom(32)), "is not `key-id:base64-key`"),
        (f"k1:{b64(os.urandom(32))},k1:{b64(os.urandom(32))}", "key id 'k1' appears twice"),
        ("k1:!!", "SLIPWAY_CODEC_KEYS: key 'k1' is not valid base64"),
        (f"k1:{b64(os.urandom(8))}", "codec key 'k1' must decode to 16, 24 or 32 bytes"),
    ]:
        monkeypatch.setenv("SLIPWAY_CODEC_KEYS", ring)
        with pytest.raises(CodecError, match=message):
            codec_from_env()
    monkeypatch.delenv("SLIPWAY_CODEC_KEYS")
    monkeypatch.setenv("SLIPWAY_CODEC_REQUIRE_ENCRYPTED", "1")
    with pytest.raises(CodecError, match="REQUIRE_ENCRYPTED is set but no key is"):
        codec_from_env()


async def test_the_key_ring_can_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ring = tmp_path / "keys"
    ring.write_text(f"k9:{b64(os.urandom(24))}\n", encoding="utf-8")
    monkeypatch.setenv("SLIPWAY_CODEC_KEYS_FILE", str(ring))
    codec = codec_from_env()
    assert codec is not None
    (payload,) = await codec.encode([PLAIN])
    assert payload.metadata["key-id"] == b"k9"


@pytest.mark.parametrize(
    ("command", "code", "prefix"),
    [
        (["-m", "starters", "status", "some-run"], 2, "payload encryption: "),
        (["worker.py"], 1, "worker: payload encryption: "),
    ],
)
def test_the_cli_and_the_worker_stop_on_a_bad_key_ring_with_one_sentence(
    command: list[str], code: int, prefix: str
) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "SLIPWAY_CODEC_KEYS": "no-colon-here",
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
    }
    for name in ("SLIPWAY_CODEC_KEY", "SLIPWAY_CODEC_KEY_FILE", "SLIPWAY_CODEC_KEYS_FILE"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, *command], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"{prefix}SLIPWAY_CODEC_KEYS: 'no-colon-here' is not `key-id:base64-key`"
    )
