"""Bits-back coding of a data set along the ACN's tour, and IID coding for the baselines.

The ACN codes a set of images in the order of the greedy tour through their codes (the ordered
bound of ``acn eval``). Tour step t of one segment is coded as in BB-ANS (Townsend et al. 2019),
with the prior conditioned on the previous image's code:

- **encoder** (walks the tour backwards, last image first): pop z ~ q(z | x_t) from the stack,
  push x_t under r(x | z), push z under p(z | c(x_{t-1})) (the segment's first image: under
  :class:`~acn.codec.latents.GaussianHead`, the codes' Gaussian);
- **decoder** (forwards): pop z under the prior, pop x_t pixel by pixel from the cached
  PixelCNN, re-encode x_t to c(x_t) (the next prior's input and the posterior's mean) and push
  z back under q(z | x_t), returning the bits the encoder took.

Each image costs -log r(x|z) - log p(z|c_prev) + log q(z|x) up to the grid: the tour's ELBO.
The decoder's images come out in tour order (a data set is a set); ``keep_order`` adds the
permutation, log N! nats.

**Segments.** Decoding runs the PixelCNN once per pixel, so the tour is cut into S segments
decoded side by side, as one batch, on one stack; each segment's head costs the Gaussian head's
KL instead of the neighbour prior's. The segments join the encoder a few at a time, so that
each joining image's pops find bits on the stack: in format 4 a quarter as many at a step as
images are coded (:func:`plan_growing`), in format 3 one a step, each segment one image shorter
than the one before (:func:`plan_segments`, :data:`acn.codec.container.GAP`).

**Start-up.** The encoder's first pops would find an empty stack and receive nothing. They find
the file's 32 check bits instead (:mod:`acn.codec.container`, pushed first). Each posterior pop
takes log2 T bits and gives most of them back before the next (one symbol at a time), so it
needs 16 bits at hand and drains -log2 of its bin's mass; on the encoder's first step the bins
are wide (:data:`START_DELTA`), the drain is about a bit per dimension, and the check bits carry
all D pops: they double as the first latent's randomness.

**Soft tour.** :func:`encode_soft_steps` / :func:`decode_soft_steps` follow the same steps but
choose the tour as they go, with bits back on each image's predecessor (:mod:`acn.codec.softtour`).

**Determinism.** Every probability the encoder uses is computed by the function the decoder uses,
with the same batch shapes (step t's images of the active segments, in segment order), dtype,
device and threads: codes, prior parameters, posterior tables and each pixel's distribution,
through the cached decoder's one path (:meth:`~acn.nn.incremental.IncrementalPixelCNN.decode`
and ``teacher_forced_params``).

The VAE codes its images in their own order (bits-back under its unconditional prior), and the
decoder-only PixelCNN pushes pixels alone; both use the same segments and file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from acn.codec.ans import Stack
from acn.codec.latents import (
    GaussianHead,
    LatentGrid,
    dither_offsets,
    gaussian_table,
    mixture_table,
    pop_posterior,
    push_posterior,
)
from acn.codec.pixels import PixelCoder, pixel_coder
from acn.codec.softtour import NearPool, Scores, pop_choice, push_choice, scores_of
from acn.codec.softtour import offsets as choice_offsets
from acn.codec.tensors import as_tensor
from acn.errors import CodecError
from acn.model import ACN
from acn.nn.incremental import IncrementalPixelCNN
from acn.nn.pixelcnn import GatedPixelCNN
from acn.nn.prior import StandardNormalPrior

# The bin width of the encoder's first latents (posterior standard deviations). Their pops find
# only the 32 check bits; each needs 16 at hand (DITHER_TOTAL) and drains -log2 q of its bin,
# about 2.5 bits at the default width, so from the seventh dimension on they would receive
# nothing. At 2 the drain is about 1 bit a dimension and 32 bits carry all of them; the coarse
# bins cost that one image a little reconstruction. Part of the format.
START_DELTA = 2.0


@dataclass(frozen=True)
class Plan:
    """Segment lengths (non-increasing) over the coding order; segment s holds positions
    ``starts[s] .. starts[s] + lengths[s] - 1``."""

    lengths: tuple[int, ...]

    @property
    def steps(self) -> int:
        return self.lengths[0]

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def rows(self, step: int) -> np.ndarray:
        """Positions coded at ``step``: one per segment still running, in segment order."""
        active = sum(1 for n in self.lengths if n > step)
        return self.starts[:active] + step


def plan_segments(images: int, segments: int, gap: int) -> Plan:
    """S segments over N images, each ``gap`` shorter than the one before (a remainder taken
    from the last ones); fewer segments where N is too small for S of them
    (:func:`max_segments`). O(S), with no search: a header's numbers cannot make it loop."""
    if images < 1 or segments < 1 or gap < 0:
        raise ValueError(f"bad plan: {images} images, {segments} segments, gap {gap}")
    s = min(segments, max_segments(images, gap))
    steps = gap * s * (s - 1) // 2  # the gaps' images: s(s - 1) is even
    first = -(-(images + steps) // s)  # ceil
    excess = s * first - steps - images  # in 0 .. s - 1: one image fewer in the last `excess`
    return Plan(tuple(first - i * gap - (i >= s - excess) for i in range(s)))


def max_segments(images: int, gap: int) -> int:
    """The most segments N images allow: the largest s with s + gap s (s - 1) / 2 <= N, the
    shortest plan of s segments (lengths 1, 1 + gap, ..., 1 + (s - 1) gap).

    It is the root of gap s^2 + (2 - gap) s - 2N = 0 rounded down, in integers: with r =
    isqrt(disc), floor((gap - 2 + sqrt(disc)) / 2 gap) = (gap - 2 + r) // (2 gap), since
    floor(y / m) = floor(floor(y) / m) for an integer m > 0.
    """
    if gap == 0:
        return images
    root = math.isqrt((2 - gap) ** 2 + 8 * gap * images)
    return (gap - 2 + root) // (2 * gap)


# Format 4's segments join the encoder as fast as its stack can feed them: at each step as many
# new segments as a quarter of the images already coded (at least one). A joining image pops its
# latent from the bits the images before it left: about 40 bits at D = 16, where a digit leaves
# 28 on net. At a half or all of them, the digits' files grew by 15-17 bytes (2.5%: the pops
# found too little); at a quarter (this rule) they were -0.2 +- 2.7 bytes from format 3's
# staircase (12 segments over the 180 validation digits, 10 seeds). Part of the format.
JOIN_SHARE = 4


def plan_growing(images: int, segments: int) -> Plan:
    """S segments over N images, joining the encoder as :data:`JOIN_SHARE` says: one at its
    first step (the image the check bits feed), then a quarter as many as are coded. S
    segments need about N / S + 3 log2 S steps, where format 3's staircase needed at least
    sqrt(2N) whatever S was. A remainder is taken from the last segments, as in
    :func:`plan_segments`; fewer segments where N is too small for S. Work O(log S) per
    segment count tried, and O(S) for the plan: a header's numbers cannot make it loop.
    """
    if images < 1 or segments < 1:
        raise ValueError(f"bad plan: {images} images, {segments} segments")
    low, high = 1, min(segments, images)  # the most segments that fit, by bisection
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if _fewest_images(mid) <= images else (low, mid - 1)
    s = low
    joins = _joins(s)
    total = sum(step * count for step, count in enumerate(joins))
    steps = -(-(images + total) // s)  # ceil
    excess = s * steps - total - images  # in 0 .. s - 1: one image fewer in the last `excess`
    lengths = [steps - step for step, count in enumerate(joins) for _ in range(count)]
    return Plan(tuple(n - (i >= s - excess) for i, n in enumerate(lengths)))


def _joins(segments: int) -> list[int]:
    """How many segments join at each encoder step from its end (a short list: the count grows
    by a quarter a step once eight images are coded)."""
    joins, coded = [1], 0
    while sum(joins) < segments:
        coded += sum(joins)  # every active segment coded one image at the last step
        joins.append(min(max(1, coded // JOIN_SHARE), segments - sum(joins)))
    return joins


def _fewest_images(segments: int) -> int:
    """The fewest images S segments fit: each segment one image longer than the last join
    step's, less its own; growing in S."""
    joins = _joins(segments)
    last = len(joins) - 1
    return sum((1 + last - step) * count for step, count in enumerate(joins))


class Networks:
    """The model's networks as the coder needs them: codes, tables and pixel paths, each
    computed by one function for both sides."""

    # Float results depend on the batch's shape: the soft tour scores one image at a time.
    batch_invariant = False
    code_units = 4096.0  # the soft tour's distances: codes in units of 2^-12

    def __init__(self, model: ACN, delta: float) -> None:
        self.model, self.kind = model, model.kind
        self.device = next(model.parameters()).device
        bank = model.bank.codes.detach().cpu().double().numpy() if model.bank is not None else None
        self.dim = model.code_dim
        self.grid = LatentGrid.for_codes(bank, self.dim, delta) if self.dim else None
        # The encoder's first latent, popped from the check bits alone (the module doc).
        wide = max(delta, START_DELTA)
        self.start_grid = LatentGrid.for_codes(bank, self.dim, wide) if self.dim else None
        self.head = GaussianHead.fit(bank, self.dim) if self.kind == "acn" else None
        decoder = model.decoder
        self.pixels: PixelCoder = pixel_coder(decoder.likelihood, decoder.image_shape[0])
        self.autoregressive = isinstance(decoder, GatedPixelCNN)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x.to(self.device)).float()

    def tour_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The codes the coding order is chosen from (the encoder's side only)."""
        return self.codes(x)

    def grid_at(self, step: int, plan: Plan) -> LatentGrid:
        """The grid of a step's latents: the start grid at the encoder's first step."""
        return self.start_grid if step == plan.steps - 1 else self.grid

    def posterior(self, c: torch.Tensor, grid: LatentGrid) -> np.ndarray:
        return gaussian_table(c.double().cpu().numpy(), 1.0, grid)

    @torch.no_grad()
    def prior(self, c_prev: torch.Tensor | None, batch: int, grid: LatentGrid) -> np.ndarray:
        """(batch, D, K) bin masses of p(z | c_prev) (or the unconditional prior)."""
        prior = self.model.prior
        if isinstance(prior, StandardNormalPrior):
            return gaussian_table(np.zeros((batch, self.dim)), 1.0, grid)
        params = prior.mixture_params(c_prev, batch)
        return mixture_table(*(p.double().cpu().numpy() for p in params), grid)

    def latent(self, bins: np.ndarray, grid: LatentGrid) -> torch.Tensor:
        return torch.from_numpy(grid.centres(bins)).float().to(self.device)

    @torch.no_grad()
    def pixel_params(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        decoder = self.model.decoder
        if self.autoregressive:
            return IncrementalPixelCNN(decoder, z, len(x)).teacher_forced_params(x)
        return decoder.params(None, z)

    @torch.no_grad()
    def pop_pixels(self, stack: Stack, z: torch.Tensor | None, batch: int) -> torch.Tensor:
        decoder, pixels = self.model.decoder, self.pixels
        if self.autoregressive:
            incremental = IncrementalPixelCNN(decoder, z, batch)
            return incremental.decode(lambda params, row, col: pixels.pop_pixel(stack, params))
        params = decoder.params(None, z)  # every pixel at once: no pixel depends on another
        C, H, W = decoder.image_shape
        x = torch.zeros(batch, C, H, W, dtype=torch.long)
        for row in range(H):
            for col in range(W):
                x[:, :, row, col] = pixels.pop_pixel(
                    stack, params[:, :, row : row + 1, col : col + 1]
                )
        return x


def encode_steps(
    stack: Stack,
    net: Networks,
    x: np.ndarray,
    place: np.ndarray,
    plan: Plan,
    seed: int,
    choose: Callable[[int], None] | None = None,
) -> None:
    """Push the images ``x`` (N, C, H, W) uint8 onto the stack, last step first; ``place`` maps each
    coding position to its row of ``x``. ``choose(step)``, if given, fills ``place`` for step
    - 1 right after step's posterior pops (the soft tour's choices)."""
    codes: dict[int, torch.Tensor] = {}

    def code_of(step: int) -> torch.Tensor:
        if step not in codes:
            codes[step] = net.codes(as_tensor(x[place[plan.rows(step)]]))
        return codes[step]

    for step in reversed(range(plan.steps)):
        rows = plan.rows(step)
        images, bins, z = as_tensor(x[place[rows]]), None, None
        grid = net.grid_at(step, plan)
        if net.dim:
            offsets = dither_offsets(seed, step, len(plan.lengths), net.dim)[: len(rows)]
            bins = pop_posterior(stack, net.posterior(code_of(step), grid), offsets)  # z ~ q(z|x)
            z = net.latent(bins, grid)
        if choose is not None and step:
            choose(step)
        net.pixels.push_image(stack, net.pixel_params(images, z), images)  # x under r(x|z)
        if net.dim:
            c_prev = code_of(step - 1)[: len(rows)] if step else None
            _push_latents(stack, net, grid, bins, c_prev, len(rows))  # z under p(z|c_prev)
        codes.pop(step + 1, None)


def decode_steps(
    stack: Stack,
    net: Networks,
    plan: Plan,
    seed: int,
    shape,
    decoded: Callable[[int, np.ndarray, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """Pop the images (N, C, H, W) uint8 in coding order: the inverse of :func:`encode_steps`.
    ``decoded(step, rows, images)``, if given, runs before the step's bits go back (the soft
    tour pushes its choices back there)."""
    x = np.zeros((sum(plan.lengths), *shape), dtype=np.uint8)
    c_prev = None
    for step in range(plan.steps):
        rows = plan.rows(step)
        bins, z = None, None
        grid = net.grid_at(step, plan)
        if net.dim:
            prev = c_prev[: len(rows)] if c_prev is not None else None
            bins = _pop_latents(stack, net, grid, prev, len(rows))  # z ~ p(z|c_prev)
            z = net.latent(bins, grid)
        images = net.pop_pixels(stack, z, len(rows)).cpu()  # x ~ r(x|z)
        x[rows] = images.numpy()  # levels < 256 (files.as_images)
        if decoded is not None:
            decoded(step, rows, images)
        if net.dim:
            c_prev = net.codes(images)
            offsets = dither_offsets(seed, step, len(plan.lengths), net.dim)[: len(rows)]
            push_posterior(stack, bins, net.posterior(c_prev, grid), offsets)  # bits back
    return x


def _push_latents(stack: Stack, net: Networks, grid: LatentGrid, bins, c_prev, batch: int) -> None:
    if net.kind == "acn" and c_prev is None:  # segment heads: one dimension at a time
        centres = grid.centres(bins)
        tables = [net.head.table(d, centres[:, :d], grid) for d in range(net.dim)]
        for d in reversed(range(net.dim)):
            stack.push_categorical(bins[:, d], tables[d])
        return
    table = net.prior(c_prev, batch, grid)
    stack.push_categorical(bins.reshape(-1), table.reshape(-1, table.shape[-1]))


def _pop_latents(stack: Stack, net: Networks, grid: LatentGrid, c_prev, batch: int) -> np.ndarray:
    if net.kind == "acn" and c_prev is None:
        bins = np.zeros((batch, net.dim), dtype=np.int64)
        for d in range(net.dim):
            centres = grid.centres(bins[:, :d])
            bins[:, d] = stack.pop_categorical(net.head.table(d, centres, grid))
        return bins
    table = net.prior(c_prev, batch, grid)
    return stack.pop_categorical(table.reshape(-1, table.shape[-1])).reshape(batch, net.dim)


def encode_soft_steps(
    stack: Stack, net: Networks, x: np.ndarray, plan: Plan, seed: int
) -> np.ndarray:
    """Push the set ``x`` (N, C, H, W) uint8 along a soft tour (:mod:`acn.codec.softtour`), choosing
    each image's predecessor with the stack's bits; returns the coding order (position ->
    row of ``x``) the decoder will give back."""
    n, lengths, starts = len(x), plan.lengths, plan.starts
    keys = [image.tobytes() for image in x]
    scores = scores_of(net, x)
    pool = NearPool(scores.codes.shape[1], scores.ln_p.shape[1], n)
    rows_of: dict[bytes, list[int]] = {}
    for i in range(n):
        rows_of.setdefault(keys[i], []).append(i)
        pool.add(keys[i], scores.codes[i], scores.ln_p[i])
    place = np.full(n, -1, dtype=np.int64)

    def put(position: int, key: bytes) -> None:
        place[position] = rows_of[key].pop()

    # The last step's images: the first is the set's first in byte order, the others uniform.
    top = [s for s in range(len(lengths)) if lengths[s] == plan.steps]
    first = pool.sorted[0]
    pool.remove(first)
    put(starts[top[0]] + plan.steps - 1, first)
    last = choice_offsets(seed, plan.steps, len(lengths))
    for s in top[1:]:
        put(starts[s] + plan.steps - 1, pop_choice(stack, pool, None, 0, last[s]))

    def choose(step: int) -> None:  # place step - 1: continuing segments' predecessors, new heads
        offsets = choice_offsets(seed, step, len(lengths))
        for s in range(sum(1 for length in lengths if length >= step)):
            after = int(place[starts[s] + step]) if lengths[s] > step else 0
            chooser = scores if lengths[s] > step else None
            put(starts[s] + step - 1, pop_choice(stack, pool, chooser, after, offsets[s]))

    encode_steps(stack, net, x, place, plan, seed, choose)
    return place


def decode_soft_steps(stack: Stack, net: Networks, plan: Plan, seed: int, shape) -> np.ndarray:
    """Pop the images of :func:`encode_soft_steps` in coding order, pushing its choices back."""
    lengths, starts = plan.lengths, plan.starts
    n = sum(lengths)
    keys: list[bytes | None] = [None] * n
    held: dict[int, Scores] = {}  # the scores of the last two steps' images, by step
    pool: NearPool | None = None

    def add(step: int, s: int) -> bytes:
        scores, i = held[step], s  # a step's rows are its segments, in order
        position = starts[s] + step
        pool.add(keys[position], scores.codes[i], scores.ln_p[i])
        return keys[position]

    def decoded(step: int, rows: np.ndarray, images: torch.Tensor) -> None:
        nonlocal pool
        block = images.numpy().astype(np.uint8)
        for position, image in zip(rows, block, strict=True):
            keys[position] = image.tobytes()
        held[step] = scores_of(net, block)
        held.pop(step - 2, None)
        if pool is None:
            pool = NearPool(held[step].codes.shape[1], held[step].ln_p.shape[1], n)
        if step:  # the choices of step - 1's images, in reverse
            offsets = choice_offsets(seed, step, len(lengths))
            for s in reversed(range(sum(1 for length in lengths if length >= step))):
                key = add(step - 1, s)
                chooser = held[step] if lengths[s] > step else None
                push_choice(stack, pool, key, chooser, s, offsets[s])

    x = decode_steps(stack, net, plan, seed, shape, decoded)
    top = [s for s in range(len(lengths)) if lengths[s] == plan.steps]
    last = choice_offsets(seed, plan.steps, len(lengths))
    for s in reversed(top):
        key = add(plan.steps - 1, s)
        if s != top[0]:
            push_choice(stack, pool, key, None, 0, last[s])
    if pool.sorted[0] != keys[starts[top[0]] + plan.steps - 1]:
        raise CodecError("corrupted file: the soft tour does not start where it must")
    return x
