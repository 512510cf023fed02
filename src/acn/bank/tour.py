"""The greedy tour through a set of codes (paper, section 4 of the notes: the ordered number).

Start at one code and repeatedly move to the nearest code not yet visited. Coding each example's
latent with the prior conditioned on the previous code in the tour gives a valid sequential code
for the whole set; the receiver can follow along by re-encoding what it has decoded, so no order
needs to be sent.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy_tour(codes: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Visit every row of ``codes`` once, each time moving to the nearest unvisited row.

    Args:
        codes: (N, D) codes.
        start: the row the tour begins at.

    Returns:
        (N,) row indices in visiting order; ``order[0] == start``. Ties go to the lowest index.
    """
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes must be a non-empty (N, D) tensor, got {tuple(codes.shape)}")
    n = codes.shape[0]
    if not 0 <= start < n:
        raise ValueError(f"start={start} is outside 0..{n - 1}")
    order = torch.empty(n, dtype=torch.long, device=codes.device)
    visited = torch.zeros(n, dtype=torch.bool, device=codes.device)
    current = start
    for step in range(n):
        order[step] = current
        visited[current] = True
        if step == n - 1:
            break
        d2 = (codes - codes[current]).pow(2).sum(dim=1)  # (N,) exact, no cancellation
        d2.masked_fill_(visited, float("inf"))
        current = int(torch.argmin(d2))  # first minimum: ties go to the lowest index
    return order
