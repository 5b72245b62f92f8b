"""Deterministic seeds: every random draw of the data layer comes from a named stream.

`mix_seed` hashes any tuple (``("epoch", seed, 3)``) to a 63-bit seed that is the same on
every machine and run, so a batch's order and augmentation are a pure function of
(seed, epoch, position) and a resumed run replays them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of ints/strings, the same on every machine and run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_generator(*parts: Any) -> torch.Generator:
    """A torch generator seeded with `mix_seed` of ``parts``: one named stream of random draws."""
    return torch.Generator().manual_seed(mix_seed(*parts))
