"""Test stacks started at the same moment by parallel xdist workers get different port
blocks: a block is reserved, not only found free (two demo stacks once shared one, and the
second's Traefik could not bind)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from tests.support import ports


def test_a_reserved_block_is_never_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ports.free_port_block(16)
    # Offer the same block first again: it is held, so another one is given. Several others
    # are offered: on a busy machine (other tests' servers) one of them may be in use.
    others = [first + 41 * k for k in range(3, 23)]
    monkeypatch.setattr(random, "sample", lambda seq, k: [first, *others])
    assert ports.free_port_block(16) in others


def test_another_process_skips_a_block_this_one_holds() -> None:
    held = ports.free_port_block(16)
    others = [held + 41 * k for k in range(5, 25)]
    other = f"""
import random
from tests.support import ports
random.sample = lambda seq, k: [{held}, *{others}]
print(ports.free_port_block(16))
"""
    answer = subprocess.run(
        [sys.executable, "-c", other], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(answer.stdout) in others
