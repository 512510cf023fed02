"""The soft tour (format 5): bits back on the choice of each image's predecessor, among its
nearest images, below the ordered bound.

The greedy tour is one fixed order of the set; the file does not need it to be that one. Here
the encoder, walking backwards, *pops* each image's tour predecessor y from the images not yet
placed and codes x under p(z | c(y)). The decoder knows y and x once it has decoded them, and it
knows the remaining set (every image it decoded before), so it pushes the choice back. A step
then costs, on average, about the soft minimum -log sum_y m_y exp(-KL(Q_x || P_y)) (m_y: the
copies of y left) instead of the greedy step's KL: every ordering of the set is a code for it,
and the file pays for the set, not for one order. The saving is at most log N!/N per image.

**Candidates.** The choice is among the :data:`CANDIDATES` images nearest to x's code among
those not yet placed (squared distance of the codes in units of 2^-12, an exact integer; ties
by the images' bytes), with probability proportional to m_y exp(-KL_y), plus an escape of mass
:data:`ESCAPE` / 2^16 that names any other remaining image uniformly (in byte order), so that
every ordering of the set stays possible. Far images would get a mass too small for the coder's
2^16 counts anyway; scoring only the near ones makes a choice O(N D) (one distance per
remaining image) and O(k D K) for the scores, where the whole-set soft tour of format 4 was
O(N D K) per choice and gave every far image at least one count of 2^24 (N / 2^24 of each
choice's mass, 6% at a million images).

**Dithered choices.** Like the latents' (:mod:`acn.codec.latents`), each choice pops a uniform
v in [0, 2^16), rotates it by an offset drawn from (seed, step, segment), and takes the
candidate whose counts hold it: the choice is as random as the offsets whatever bits lie on
the stack (at the file's start, only the check bits). The escape's index is rotated the same
way.

**Order of choices.** Choices are made per tour step for all segments (plan of
:mod:`acn.codec.bitsback`): at encoder step t, after the posterior pops of step t, the images of
step t - 1 are placed, segment by segment: a continuing segment's by the soft choice, a segment
whose last image is at t - 1 by a uniform choice among the distinct remaining images. The
encoder's very first image is the remaining set's first in byte order (no choice: the stack
holds only the check bits then).

**Determinism.** Identical images are one candidate (the decoder cannot tell copies apart).
The scores come from codes and tables computed by one function on both sides: batch by batch
on the exact path (whose integers do not depend on the batch), one image at a time on the
float path. Distances are exact integers in float64 (below 2^53 in any summation order), the
KL an exact integer dot product of counts and :func:`acn.codec.intmath.ln_units` logarithms,
and the weights :func:`acn.codec.intmath.exp_table`'s integers: an exact file's choices are the
same on every machine.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch

from acn.codec.ans import Stack
from acn.codec.intmath import ACT, LN2_40, LN_BITS, exact_counts, exp_table, ln_units
from acn.codec.latents import DITHER_TOTAL, pop_dithered, push_dithered
from acn.codec.tensors import as_tensor
from acn.errors import CodecError

# The candidates of a choice: the nearest images not yet placed. At 500 mnist5k test images a
# choice's mass lies almost all in its nearest few (docs/codec.md). Part of the format.
CANDIDATES = 32
# The escape's counts out of 2^16: any other remaining image, uniformly. Part of the format.
ESCAPE = 16
CODE_MAX = 1 << 20  # a code's units in the distance: |c| <= 256 (exact squares below 2^53)
PROB_UNITS = 1 << 24  # the tables' probabilities, as counts
LOG_FLOOR = -60 << LN_BITS  # ln of a zero count: a bin of mass 0 would give -inf
BATCH = 256  # images scored at once on the exact path


@dataclass
class Scores:
    """What the choices need of a batch of images: their codes (B, D) in integer units (the
    candidate search); each posterior table as counts out of 2^24, ``q`` (B, D K), with
    ``q_ln_q`` (B,) (as choosers); the log of the prior their code induces, ``ln_p`` (B, D K),
    in units of 2^-20 nats (as candidates)."""

    codes: np.ndarray
    q: np.ndarray
    q_ln_q: np.ndarray
    ln_p: np.ndarray

    def kl_units(self, i: int, ln_p: np.ndarray) -> np.ndarray:
        """KL(Q_i || P_y) for the rows of ``ln_p`` (k, D K), in units of 2^-12 nats (rounded):
        exact integers, whatever k."""
        q = self.q[i].astype(np.int64)
        kl = int(self.q_ln_q[i]) - ln_p.astype(np.int64) @ q  # units 2^-44
        shift = 24 + LN_BITS - ACT
        return (kl + (1 << (shift - 1))) >> shift


def scores_of(net, images: np.ndarray) -> Scores:
    """The scores of ``images`` (B, C, H, W) uint8, by the one function both sides use."""
    step = BATCH if net.batch_invariant else 1
    parts = [_scores(net, as_tensor(images[i : i + step])) for i in range(0, len(images), step)]
    return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in Scores.__annotations__))


@torch.no_grad()
def _scores(net, x: torch.Tensor) -> Scores:
    code = net.codes(x)
    units = np.rint(code.double().cpu().numpy() * net.code_units)
    units = np.clip(units, -CODE_MAX, CODE_MAX)
    q = _prob_counts(net.posterior(code, net.grid))
    p = _prob_counts(net.prior(code, len(x), net.grid))
    ln_q = np.where(q > 0, ln_units(np.maximum(q, 1)), 0) - 24 * _LN2
    ln_p = np.maximum(np.where(p > 0, ln_units(np.maximum(p, 1)) - 24 * _LN2, LOG_FLOOR), LOG_FLOOR)
    q_ln_q = (q * np.where(q > 0, ln_q, 0)).sum(axis=1)
    return Scores(units, q.astype(np.int32), q_ln_q, ln_p.astype(np.int32))


_LN2 = (LN2_40 + (1 << 19)) >> 20  # ln 2 in units of 2^-20: ln_units(2), without the table


def _prob_counts(table: np.ndarray) -> np.ndarray:
    """(B, D, K) probabilities as (B, D K) counts out of 2^24 (exact multiples on the exact
    path; rounded on the float path)."""
    counts = np.rint(np.asarray(table, dtype=np.float64) * PROB_UNITS).astype(np.int64)
    return counts.reshape(len(table), -1)


def offsets(seed: int, step: int, slots: int) -> np.ndarray:
    """(slots, 2) offsets of one step's choices, a function of (seed, step) alone: column 0
    rotates the candidates' pop, column 1 an escape's or a uniform choice's index. Stream 2 of
    the seed (the latents' offsets are stream [seed, step])."""
    return np.random.default_rng([seed, step, 2]).integers(0, 1 << 32, size=(slots, 2))


class NearPool:
    """The images not yet placed (the encoder's, shrinking) or decoded so far (the decoder's,
    growing): distinct keys (image bytes) with their copies, codes and prior log tables, and
    the keys in byte order. Rows of removed keys are reclaimed when half the rows are dead."""

    def __init__(self, dim: int, width: int, capacity: int) -> None:
        self.codes = np.zeros((capacity, dim))  # integer units, in float64 for the products
        self.norms = np.zeros(capacity)
        self.ln_p = np.zeros((capacity, width), dtype=np.int32)
        self.copies = np.zeros(capacity, dtype=np.int64)
        self.keys: list[bytes | None] = [None] * capacity
        self.row_of: dict[bytes, int] = {}
        self.sorted: list[bytes] = []  # distinct keys, byte order
        self.used = 0  # rows 0 .. used - 1 hold keys (dead ones have no copies)

    def __len__(self) -> int:
        """Distinct keys held."""
        return len(self.sorted)

    def add(self, key: bytes, code: np.ndarray, ln_p: np.ndarray) -> None:
        row = self.row_of.get(key)
        if row is None:
            if self.used == len(self.keys):
                self._compact()
            row, self.used = self.used, self.used + 1
            self.codes[row], self.ln_p[row], self.keys[row] = code, ln_p, key
            self.norms[row] = float(code @ code)  # an exact integer
            self.row_of[key] = row
            bisect.insort(self.sorted, key)
        self.copies[row] += 1

    def remove(self, key: bytes) -> None:
        row = self.row_of[key]
        self.copies[row] -= 1
        if not self.copies[row]:
            del self.row_of[key]
            self.sorted.pop(bisect.bisect_left(self.sorted, key))
            if 2 * len(self.sorted) < self.used:
                self._compact()

    def _compact(self) -> None:
        live = np.flatnonzero(self.copies[: self.used] > 0)
        n = len(live)
        for array in (self.codes, self.norms, self.ln_p, self.copies):
            array[:n] = array[live]
        self.copies[n : self.used] = 0
        self.keys[:n] = [self.keys[r] for r in live]
        self.keys[n : self.used] = [None] * (self.used - n)
        self.row_of = {self.keys[r]: r for r in range(n)}
        self.used = n

    def candidates(self, code: np.ndarray) -> np.ndarray:
        """Rows of the :data:`CANDIDATES` keys nearest to ``code``, by (distance, key)."""
        used = self.used
        # |c - y|^2 - |c|^2: integers below 2^53, so exact in any order of summation.
        d = self.norms[:used] - 2.0 * (self.codes[:used] @ code)
        d[self.copies[:used] == 0] = np.inf
        k = min(CANDIDATES, len(self))
        if k < len(self):
            near = np.argpartition(d, k - 1)[:k]
            cut = d[near].max()
            inside = np.flatnonzero(d < cut)
            ties = sorted(np.flatnonzero(d == cut), key=lambda r: self.keys[r])
            rows = np.concatenate([inside, np.array(ties[: k - len(inside)], dtype=np.int64)])
        else:
            rows = np.flatnonzero(self.copies[:used] > 0)
        return np.array(sorted(rows.tolist(), key=lambda r: (d[r], self.keys[r])), dtype=np.int64)

    def counts(self, chooser: Scores, i: int, rows: np.ndarray) -> np.ndarray:
        """Counts out of 2^16 of the candidates ``rows`` for chooser ``i``, then the escape's
        (0 where no other key remains)."""
        log_m = ln_units(self.copies[rows]) >> (LN_BITS - ACT)
        logits = log_m - chooser.kl_units(i, self.ln_p[rows])
        weights = exp_table().numpy(logits - logits.max())  # units of 2^-32
        escape = ESCAPE if len(self) > len(rows) else 0
        counts = exact_counts(weights[None], total=DITHER_TOTAL - escape)[0]
        return np.append(counts, escape)

    # --- the escape's and the uniform choices' indices: keys in byte order ------------------

    def other(self, index: int, rows: np.ndarray) -> bytes:
        """The ``index``-th key in byte order that is not among ``rows``."""
        r = index
        for taken in sorted(bisect.bisect_left(self.sorted, self.keys[row]) for row in rows):
            if taken <= r:
                r += 1
        return self.sorted[r]

    def index_of_other(self, key: bytes, rows: np.ndarray) -> int:
        r = self._rank(key)
        return r - sum(1 for row in rows if self.keys[row] < key)

    def _rank(self, key: bytes) -> int:
        r = bisect.bisect_left(self.sorted, key)
        if r == len(self.sorted) or self.sorted[r] != key:
            raise CodecError("corrupted file: a tour choice names no remaining image")
        return r


def pop_choice(
    stack: Stack, pool: NearPool, chooser: Scores | None, i: int, offset: np.ndarray
) -> bytes:
    """The encoder: draw the predecessor of chooser ``i`` (None: a uniform choice) with the
    stack's bits, and take it from the pool."""
    if chooser is None:
        key = pool.sorted[_pop_index(stack, len(pool), int(offset[1]))]
    else:
        rows = pool.candidates(chooser.codes[i])
        counts = pool.counts(chooser, i, rows)
        b = pop_dithered(stack, counts, np.cumsum(counts) - counts, int(offset[0]) % DITHER_TOTAL)
        if b < len(rows):
            key = pool.keys[rows[b]]
        else:  # the escape
            index = _pop_index(stack, len(pool) - len(rows), int(offset[1]))
            key = pool.other(index, rows)
    pool.remove(key)
    return key


def push_choice(
    stack: Stack, pool: NearPool, key: bytes, chooser: Scores | None, i: int, offset: np.ndarray
) -> None:
    """The decoder: give the bits of :func:`pop_choice` back, ``key`` already in the pool."""
    if chooser is None:
        _push_index(stack, pool._rank(key), len(pool), int(offset[1]))
        return
    rows = pool.candidates(chooser.codes[i])
    counts = pool.counts(chooser, i, rows)
    found = np.flatnonzero(np.array([pool.keys[r] == key for r in rows]))
    if len(found):
        b = int(found[0])
    else:
        _push_index(stack, pool.index_of_other(key, rows), len(pool) - len(rows), int(offset[1]))
        b = len(rows)
    if counts[b] == 0:
        raise CodecError("corrupted file: a tour choice the encoder could not have made")
    push_dithered(stack, b, counts, np.cumsum(counts) - counts, int(offset[0]) % DITHER_TOTAL)


def _pop_index(stack: Stack, n: int, offset: int) -> int:
    """A uniform index in 0 .. n - 1, rotated by ``offset`` (no bits where n is 1)."""
    if n == 1:
        return 0
    return (int(stack.pop_uniform(np.array([n]))[0]) + offset) % n


def _push_index(stack: Stack, index: int, n: int, offset: int) -> None:
    if n > 1:
        stack.push_uniform(np.array([(index - offset) % n]), np.array([n]))
