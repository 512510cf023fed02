"""Where test-time neighbours come from, and how many are drawn from (no torch here: the
command line reads these names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The K of the paper's Table 2: KL with the prior conditioned on one of the K nearest codes.
NEIGHBOUR_KS = (1, 5, 10)
# The evaluated split's own codes, the re-encoded training split, the code bank as trained.
POOLS = ("split", "train", "bank")


@dataclass
class Pool:
    """Where test-time neighbours come from.

    Attributes:
        name: one of :data:`POOLS`.
        codes: (N, D) the pool's codes.
        contains_split: the evaluated split's example i is row i of the pool (so row i is
            excluded from its own neighbours).
        description: one line for the report.
    """

    name: str
    codes: torch.Tensor
    contains_split: bool
    description: str
