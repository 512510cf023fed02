"""The soft tour: bits back on the choice of each image's predecessor, below the ordered bound.

The greedy tour is one fixed order of the set; the file does not need it to be that one. Here
the encoder, walking backwards, *pops* each image's tour predecessor y from the images not yet
placed, with probability

    pi(y | x) proportional to  m_y exp(-KL(Q_x || P_y))

(m_y: the copies of y left; KL of x's discretised posterior from the prior conditioned on y's
code, in nats), and codes x under p(z | c(y)) as before. The decoder knows y and x once it has
decoded them, and it knows the remaining set (every image it decoded before), so it pushes the
choice back. A step then costs, on average, the soft minimum -log sum_y m_y exp(-KL_y) <=
min_y KL_y instead of the greedy step's KL: every ordering of the set is a code for it, and the
file pays for the set, not for one order. The saving is at most log N!/N per image (the order's
information). Codec notes: "Going below the ordered bound"; Severo et al. 2021 code multisets
the same way.

Choices are made per tour step for all segments (plan of :mod:`acn.codec.bitsback`): at
encoder step t, after the posterior pops of step t, the images of step t - 1 are placed, segment
by segment: a continuing segment's by the soft choice above, a segment whose last image is at
t - 1 by a uniform choice (m_y / |remaining|). The encoder's very first image is the remaining
set's first in byte order (no choice: the stack holds only the check bits then).

**Determinism.** Candidates are the distinct images, in byte order, so identical images are one
candidate (the decoder cannot tell copies apart). The scores come from codes computed one image
at a time (batch 1, the same on both sides whatever the step batches), as fixed-point integers:
the KL is an exact integer dot product, whatever the number of candidates.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from acn.codec.ans import Stack
from acn.errors import CodecError

# Fixed point of the scores: probabilities and log-probabilities times 2^20 (the KL's integer
# is exact in int64 up to D K = 2^15 bins: 2^20 * 2^26 * 2^15 < 2^63).
SCALE = 1 << 20
# log-probabilities below this (nats) count as this: a bin of mass 0 would give -inf.
LOG_FLOOR = -60.0


class Scores:
    """What the choices need of one image: its posterior table, as the chooser (q, sum q log q),
    and the log of the prior its code induces, as a candidate (lp); fixed point, (D K,) each."""

    def __init__(self, q: np.ndarray, p: np.ndarray) -> None:
        with np.errstate(divide="ignore"):
            log_q = np.rint(np.maximum(np.log(q), LOG_FLOOR) * SCALE).astype(np.int64)
            self.lp = np.rint(np.maximum(np.log(p), LOG_FLOOR) * SCALE).astype(np.int64)
        self.q = np.rint(q * SCALE).astype(np.int64)
        self.q_log_q = int(self.q @ log_q)


def image_scores(net, image: torch.Tensor) -> Scores:
    """The scores of one image (1, C, H, W), from its code computed alone."""
    code = net.codes(image)
    q = net.posterior(code, net.grid).reshape(-1)
    p = net.prior(code, 1, net.grid).reshape(-1)
    return Scores(q, p)


class Pool:
    """The images not yet placed: distinct keys (image bytes) in order, with copies and scores."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.copies: dict[bytes, int] = {}
        self.scores: dict[bytes, Scores] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: bytes, scores: Scores) -> None:
        if key in self.copies:
            self.copies[key] += 1
        else:
            bisect.insort(self.keys, key)
            self.copies[key], self.scores[key] = 1, scores

    def remove(self, key: bytes) -> None:
        self.copies[key] -= 1
        if not self.copies[key]:
            del self.copies[key], self.scores[key]
            self.keys.pop(bisect.bisect_left(self.keys, key))

    def index(self, key: bytes) -> int:
        i = bisect.bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            raise CodecError("corrupted file: a tour choice names no remaining image")
        return i

    def table(self, chooser: Scores | None) -> np.ndarray:
        """(1, keys) choice probabilities: soft-min of the KLs from ``chooser`` (None:
        uniform over the images, copies counted)."""
        log_m = np.log(np.array([self.copies[k] for k in self.keys], dtype=np.float64))
        if chooser is None:
            logits = log_m
        else:
            lp = np.stack([self.scores[k].lp for k in self.keys])  # (keys, D K)
            kl = chooser.q_log_q - (lp * chooser.q).sum(axis=1)  # exact integers
            logits = log_m - kl.astype(np.float64) / (SCALE * SCALE)
        w = np.exp(logits - logits.max())
        return (w / w.sum())[None]


def pop_choice(stack: Stack, pool: Pool, chooser: Scores | None) -> bytes:
    """Draw a remaining image with the stack's bits (the encoder) and take it from the pool."""
    i = int(stack.pop_categorical(pool.table(chooser))[0]) if len(pool) > 1 else 0
    key = pool.keys[i]  # one candidate left: no choice, no bits
    pool.remove(key)
    return key


def push_choice(stack: Stack, pool: Pool, key: bytes, chooser: Scores | None) -> None:
    """Give the bits of :func:`pop_choice` back (the decoder), ``key`` already in the pool."""
    i = pool.index(key)
    if len(pool) > 1:
        stack.push_categorical(np.array([i]), pool.table(chooser))
