"""Checkpoint files that are not checkpoints: any bytes give one CheckpointError."""

from __future__ import annotations

import random

import pytest

from acn.errors import CheckpointError
from acn.store.checkpoint import load_checkpoint


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_are_an_unreadable_checkpoint(tmp_path, seed):
    """torch's loader raises many kinds of error on garbage (an IndexError among them, seen with
    4,096 random bytes); every one must become the same clear error."""
    rng = random.Random(seed)
    path = tmp_path / "junk.pt"
    for size in (1, 7, 64, 4096):
        for _ in range(50):
            head = rng.choice([b"", b"\x80\x02", b"\x80\x05", b"PK\x03\x04"])  # pickle, zip
            path.write_bytes(head + rng.randbytes(size))
            with pytest.raises(CheckpointError, match="junk.pt: not a"):
                load_checkpoint(path)
