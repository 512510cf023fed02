"""``compress`` and ``decompress``: a set of images to an ``.acnz`` byte string and back.

:func:`encode` does the work and says what it did (the coding order, the seed kept, each seed's
size); :func:`compress` returns its bytes. Both decode their own output before returning and
refuse to hand out a file that does not give the images back bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from acn.bank.tour import greedy_tour
from acn.codec import container, intmath
from acn.codec import parts as parts_of
from acn.codec.ans import Stack
from acn.codec.bitsback import (
    START_DELTA,
    Networks,
    Plan,
    decode_soft_steps,
    decode_steps,
    encode_soft_steps,
    encode_steps,
)
from acn.codec.exact import ExactNetworks
from acn.codec.fingerprint import fingerprint
from acn.codec.segments import layout_by_bits
from acn.codec.tensors import as_tensor
from acn.errors import CodecError
from acn.model import ACN
from acn.threads import AUTO, using
from acn.threads import choose as choose_threads

# Bin width of the latent grid, in posterior standard deviations, sqrt(1/2): first measured on the
# digits test split (format 1, 16 seeds: 0.5: +1.51%, 0.71: +1.27%, 1.0: +1.47%), then checked
# on the validation splits (docs/results.md, the codec's constants): the digits there prefer 1.0
# by 0.3-0.4%, mnist5k sqrt(1/2) by 0.05%, each within one or two standard errors, so it stays.
# The PixelCNN reads little from z, so a coarse grid costs little.
DEFAULT_DELTA = container.delta_of(container.DEFAULT_DELTA_CODE)


@dataclass
class Encoded:
    """What :func:`encode` made.

    Attributes:
        data: the file's bytes.
        order: (N,) the original row of each image in the order :func:`decompress` returns them.
        seed: the dither seed kept (the smallest of the seeds tried).
        sizes: the file size in bytes for each seed tried.
        plans: each part's segments.
        header_bytes: the header's share of ``data``.
        seconds: encode time (all seeds) and verification time.
    """

    data: bytes
    order: np.ndarray
    seed: int
    sizes: list[int]
    plans: list[Plan]
    header_bytes: int
    seconds: dict = field(default_factory=dict)

    @property
    def plan(self) -> Plan:
        """The segments of a one-part file; of several, every part's lengths in turn."""
        return Plan(tuple(n for plan in self.plans for n in plan.lengths))

    def bits_per_image(self) -> float:
        return 8 * len(self.data) / len(self.order)


def compress(model: ACN, images, **options) -> bytes:
    """The images (N, C, H, W) or (N, H, W) of integer levels as one ``.acnz`` byte string;
    options as :func:`encode`."""
    return encode(model, images, **options).data


def encode(
    model: ACN,
    images,
    *,
    keep_order: bool = False,
    seeds: int = 1,
    first_seed: int = 0,
    segments: int | None = None,
    delta: float = DEFAULT_DELTA,
    threads: int = 1,
    verify: bool = True,
    soft_tour: bool = False,
    exact: bool = False,
    parts: int | None = None,
) -> Encoded:
    """Code ``images`` with ``model``: bits-back along the tour (ACN), IID bits-back (VAE) or
    pixels alone (decoder-only PixelCNN).

    Args:
        model: a trained model, in eval mode.
        images: integer levels, (N, C, H, W) or (N, H, W) for one channel.
        keep_order: also code the images' order (log N! nats); by default an ACN file decodes
            to the images in tour order (the VAE's and PixelCNN's keep theirs anyway).
        seeds: dither seeds to try (``first_seed`` onwards); the smallest file is kept, its
            header included (a seed other than 0 costs the header two bytes).
        segments: tour segments decoded side by side (None: as many as keep the ACN's segment
            heads within 0.2% of the file, :func:`acn.codec.segments.layout_by_bits`; at
            most :data:`acn.codec.container.MAX_SEGMENTS_4`, fewer where N is too small).
        delta: the latent grid's bin width, a power of sqrt(1/2).
        threads: torch threads for every probability (recorded in the file: the decoder uses
            the same, as the float reduction order depends on it).
        verify: decode the file and compare before returning (a file that does not decode is
            an error, never an output).
        soft_tour: choose each image's tour predecessor with bits back (ACN only, a set:
            :mod:`acn.codec.softtour`) instead of following the greedy tour; the file can go
            below the ordered bound, and the images come back in the soft tour's order.
        exact: compute every probability in integers (:mod:`acn.codec.exact`): the file
            decodes on any machine, thread count or device; ``threads`` then only sets how
            fast.
        parts: independent stacks, one per decoding process (:mod:`acn.codec.parts`; None:
            two where the file is large enough that they cost little, as segments do).

    Raises:
        CodecError: images of the wrong shape or levels for the model, or a file that does not
            decode to them.
    """
    x = as_images(images, model)
    _check_options(model, seeds, first_seed, segments, threads, soft_tour, keep_order, parts)
    n = len(x)
    code = container.delta_code(delta)
    as_set = model.kind == "acn" and not keep_order
    start = time.perf_counter()
    with torch.no_grad(), using(threads):
        net = networks(model, delta, exact)
        # The greedy tour: the coding order, and the runs that parts cut (the soft tour of a
        # one-part file chooses its own order from the whole set).
        order = _coding_order(net, x, model.kind).numpy() if not soft_tour or parts != 1 else None
        if segments is None or parts is None:
            layout = layout_by_bits(model, x, order)
            parts = parts or layout.parts
            segments = segments or max(layout.segments, parts)  # a part needs a segment
        version = container.version_of(soft_tour)
        plans = parts_of.plans(n, segments, min(parts, segments, n), version)
        recorded = 0 if exact else threads  # the exact path's bits depend on no thread count
        header = container.Header(
            model.kind,
            n,
            code,
            keep_order,
            recorded,
            sum(len(plan.lengths) for plan in plans),
            0,
            soft_tour,
            version,
            part_bytes=(1,) * (len(plans) - 1),  # a placeholder: the check bits omit them
        )
        fp = _fingerprint(model, net, _settings(header))
        crc = container.images_crc(x, as_set)
        kept = order if keep_order and model.kind == "acn" else None  # VAE, PixelCNN: in order
        coders = _part_coders(net, x, plans, fp, crc, order, kept, soft_tour)
        sizes, best = _smallest(coders, header, range(first_seed, first_seed + seeds))
    seconds = {"encode": time.perf_counter() - start}
    seed, data, placed = best
    shown = placed if as_set else np.arange(n)
    header_bytes = len(container.parse(data).fields) + 1
    if verify:
        start = time.perf_counter()
        with using(threads):
            _verify(model, data, x[shown])
        seconds["verify"] = time.perf_counter() - start
    return Encoded(data, shown, seed, sizes, plans, header_bytes, seconds)


def _smallest(coders: list[_Coder], header: container.Header, seeds: range) -> tuple:
    """Every seed's file size, and the (seed, file, coding order) of the smallest."""
    sizes, best = [], None
    for seed in seeds:
        data, placed = _file(coders, replace(header, seed=seed))
        sizes.append(len(data))
        if best is None or len(data) < len(best[1]):  # ties keep the first
            best = (seed, data, placed)
    return sizes, best


def _part_coders(net, x, plans, fp, crc, order, kept, soft_tour) -> list[_Coder]:
    """Every part's coder: its run of the coding order (None: the soft tour of the whole set)
    and, in part 0 only, the order kept."""
    sizes = [sum(plan.lengths) for plan in plans]
    runs = [
        order[first : first + size] if order is not None else None
        for first, size in zip(parts_of.starts(sizes), sizes, strict=True)
    ]
    return [
        _Coder(net, x, plan, fp, crc, run, kept if p == 0 else None, soft_tour)
        for p, (plan, run) in enumerate(zip(plans, runs, strict=True))
    ]


def _file(coders: list[_Coder], header: container.Header) -> tuple[bytes, np.ndarray]:
    """One seed's file: every part's stack under one header, and the coding order."""
    check = container.check_bits(coders[0].fp, coders[0].crc, header.fields(lengths=False))
    stacks, placed = zip(*(coder.payload(header.seed, check) for coder in coders), strict=True)
    header = replace(header, part_bytes=tuple(len(stack) for stack in stacks[:-1]))
    return header.to_bytes(coders[0].fp) + b"".join(stacks), np.concatenate(placed)


@dataclass
class _Coder:
    """One part's stack, the same for every seed but the seed: the networks, all the images,
    the part's plan, the fingerprint, the images' CRC, the part's run of the coding order
    (position -> row of ``x``; None: the soft tour of the whole set) and the order kept, if
    any (part 0 only)."""

    net: Networks | ExactNetworks
    x: np.ndarray
    plan: Plan
    fp: int
    crc: int
    order: np.ndarray | None
    kept: np.ndarray | None
    soft: bool

    def payload(self, seed: int, check: int) -> tuple[bytes, np.ndarray]:
        """The part's stack as bytes and its coding order, the stack padded up to
        MIN_BITS_PER_IMAGE bits an image where it is shorter (sets of blank copies)."""
        images = sum(self.plan.lengths)
        pad = 0
        for _ in range(4):  # a second pass at most: the padding's size is known to a symbol
            stack, placed = self.stack(seed, check, pad)
            payload = stack.to_bytes()
            more = container.pad_symbols(len(payload), images)
            if not more:
                return payload, placed
            pad += more
        raise CodecError(f"could not pad the stack of {images} images")  # pragma: no cover

    def stack(self, seed: int, check: int, pad: int) -> tuple[Stack, np.ndarray]:
        """One seed's stack (padding, check bits, the kept order if any, the images) and its
        coding order: the greedy tour's run, or the soft tour's order of the run's images."""
        stack = Stack()
        container.push_pad(stack, pad)
        container.push_check(stack, check)
        if self.kept is not None:
            container.push_order(stack, self.kept)
        if self.soft:  # the soft tour of the whole set, or of the part's run as a set
            run = self.order
            images = self.x if run is None else self.x[run]
            placed = encode_soft_steps(stack, self.net, images, self.plan, seed)
            return stack, placed if run is None else run[placed]
        encode_steps(stack, self.net, self.x, self.order, self.plan, seed)
        return stack, self.order


def _verify(model: ACN, data: bytes, images: np.ndarray) -> None:
    if not np.array_equal(decompress(model, data), images):
        raise CodecError(
            "the compressed file did not decode to the images (a nondeterministic "
            "computation?); nothing was written"
        )


def _check_options(
    model: ACN,
    seeds: int,
    first_seed: int,
    segments: int | None,
    threads: int,
    soft_tour: bool,
    keep_order: bool,
    parts: int | None,
) -> None:
    if seeds < 1 or first_seed < 0 or first_seed + seeds - 1 > container.MAX_SEED:
        raise ValueError(
            f"seeds must lie in 0..{container.MAX_SEED}, got {seeds} from {first_seed}"
        )
    if segments is not None and not 1 <= segments <= container.MAX_SEGMENTS_4:
        raise ValueError(f"segments must be in 1..{container.MAX_SEGMENTS_4}, got {segments}")
    if not 1 <= threads <= container.MAX_THREADS:
        raise ValueError(f"threads must be in 1..{container.MAX_THREADS}, got {threads}")
    if soft_tour and model.kind != "acn":
        raise ValueError(f"the soft tour needs an ACN (a tour through codes), not a {model.kind}")
    if soft_tour and keep_order:
        raise ValueError(
            "the soft tour codes a set (its order is the bits it saves): no keep_order"
        )
    if parts is not None and not 1 <= parts <= container.MAX_PARTS:
        raise ValueError(f"parts must be in 1..{container.MAX_PARTS}, got {parts}")


def networks(model: ACN, delta: float, exact: bool) -> Networks | ExactNetworks:
    """The networks the coder consults: in floats, or exact (:mod:`acn.codec.exact`)."""
    return ExactNetworks(model, delta, START_DELTA) if exact else Networks(model, delta)


def _fingerprint(model: ACN, net, settings: bytes) -> int:
    """An exact file is tied to the integer model only; a float file to the float stack."""
    return (
        net.fingerprint(settings)
        if isinstance(net, ExactNetworks)
        else fingerprint(model, settings)
    )


# Where a fingerprint does not match: what may differ (docs/codec.md, where a file decodes).
ELSEWHERE = (
    "another model, other code, or another machine or float stack (CPU instruction set, "
    "device, torch, numpy, scipy or constriction version): files decode only where the "
    "encoder's floats are reproduced"
)


def decompress(model: ACN, data: bytes, workers: int | None = None) -> np.ndarray:
    """The images (N, C, H, W) of an ``.acnz`` byte string, uint8 levels: in tour order for an
    ACN file made without ``keep_order``, else in the order they were given.

    A file of several parts is decoded by up to ``workers`` processes side by side (None: one
    per part, at most one per free core); the first part in this one.

    A damaged or crafted header is refused before decoding starts, in a few milliseconds: its
    numbers are within limits, N within what the file's length allows, and its check byte
    matches this model and float stack.

    Raises:
        CodecError: a file that is not ours, truncated or corrupted, or made by another model
            or on another float stack (:mod:`acn.codec.fingerprint`).
    """
    parsed = container.parse(bytes(data))
    header = parsed.header
    if header.kind != model.kind:
        net = None
        fp = fingerprint(model, _settings(header))
    else:
        net = networks(model, header.delta, header.exact)
        fp = _fingerprint(model, net, _settings(header))
    matches = container.check_byte(parsed.fields, fp) == parsed.check
    if header.kind != model.kind:
        damaged = "" if matches else " (or its header is damaged)"
        raise CodecError(
            f"the file was made by a {header.kind} model; this model is a {model.kind}{damaged}"
        )
    if not matches:
        raise CodecError(
            "the file's header does not match this model: it is damaged, or the file was made "
            f"by {ELSEWHERE}"
        )
    plans = parts_of.plans(
        header.images, header.segments, header.parts, header.version, settle=False
    )
    if sum(len(plan.lengths) for plan in plans) != header.segments:
        raise CodecError("corrupted file: its segment count does not fit its image count")
    if workers is None:
        workers = min(header.parts, choose_threads(AUTO))
    stacks = parts_of.payloads(parsed.payload, header.part_bytes)
    for plan, stack in zip(plans, stacks, strict=True):  # each part holds a bit an image
        if sum(plan.lengths) * container.MIN_BITS_PER_IMAGE > 8 * len(stack):
            raise CodecError(
                f"corrupted or truncated file: a part of {sum(plan.lengths)} images in "
                f"{len(stack)} bytes"
            )
    # This process's networks for the first part; a worker builds its own, with the exact
    # path's tables computed here (a fresh interpreter spends a second or more on them).
    tables = intmath.network_tables() if header.exact and header.parts > 1 else None
    jobs = [
        (model, header, plan, stack, p == 0, net if p == 0 else None, tables if p else None)
        for p, (plan, stack) in enumerate(zip(plans, stacks, strict=True))
    ]
    try:
        decoded = parts_of.run_side_by_side(_decode_part, jobs, workers)
    except (ValueError, RuntimeError, OverflowError, IndexError, MemoryError) as error:
        # Garbage can drive the coder or a table outside its domain: still one clear error.
        raise CodecError(f"corrupted or truncated file ({error})") from None
    images = np.concatenate([part[0] for part in decoded])
    if header.keep_order and model.kind == "acn":
        restored = np.empty_like(images)
        restored[decoded[0][1]] = images
        images = restored
    crc = container.images_crc(images, model.kind == "acn" and not header.keep_order)
    expected = container.check_bits(fp, crc, header.fields(lengths=False))
    if any(check != expected or not clean for _, _, check, clean in decoded):
        raise CodecError(
            "the file does not decode correctly with this model: it is damaged or truncated, "
            f"or was made by {ELSEWHERE}"
        )
    return images


def _decode_part(
    model: ACN,
    header: container.Header,
    plan: Plan,
    payload: bytes,
    first: bool,
    net=None,
    tables: dict | None = None,
) -> tuple[np.ndarray, np.ndarray | None, int, bool]:
    """One part's images in coding order, the order kept (part 0 of a kept-order ACN file),
    the check bits and whether only padding was left below them. Runs in a worker process
    too: everything it needs comes in its arguments (the networks are built there)."""
    if tables:
        intmath.adopt_tables(tables)
    threads = header.threads or 1  # exact: any count gives the same bits; one is fastest
    with torch.no_grad(), using(threads):
        net = net if net is not None else networks(model, header.delta, header.exact)
        stack = Stack(payload)
        decode = decode_soft_steps if header.soft_tour else decode_steps
        x = decode(stack, net, plan, header.seed, model.info.image_shape)
        kept = header.keep_order and model.kind == "acn" and first
        order = container.pop_order(stack, header.images) if kept else None
        check = container.pop_check(stack)
        return x, order, check, container.pop_pad(stack)


def as_images(images, model: ACN) -> np.ndarray:
    """Integer images as (N, C, H, W) uint8, checked against the model's shape and levels.

    uint8 all the way through the codec (a view where they are uint8 already): 60,000 MNIST
    digits are 47 MB so, 376 MB as int64. Only a step's images are widened for the networks
    (:func:`acn.codec.bitsback.as_tensor`).
    """
    a = np.asarray(images)
    C, H, W = model.info.image_shape
    if a.ndim == 3 and C == 1:
        a = a.reshape(len(a), 1, *a.shape[1:])  # a view with the standard strides
    if a.ndim != 4 or a.shape[1:] != (C, H, W) or len(a) == 0:
        raise CodecError(
            f"images must be (N, {C}, {H}, {W})"
            + (f" or (N, {H}, {W})" if C == 1 else "")
            + f" for this model, got {tuple(np.shape(images))}"
        )
    if len(a) > container.MAX_IMAGES:
        raise CodecError(f"one file holds at most {container.MAX_IMAGES} images, got {len(a)}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
        raise CodecError(f"images must hold integer levels (an integer dtype), got {a.dtype}")
    levels = model.info.levels
    if levels > 256:
        raise CodecError(f"the codec codes 8-bit levels (at most 256), the model has {levels}")
    if a.min() < 0 or a.max() >= levels:
        raise CodecError(
            f"images must hold levels 0..{levels - 1} for this model, got {a.min()}..{a.max()}"
        )
    return np.ascontiguousarray(a, dtype=np.uint8)


def _coding_order(net: Networks, x: np.ndarray, kind: str) -> torch.Tensor:
    """The greedy tour through the images' codes (ACN) or their own order."""
    if kind != "acn":
        return torch.arange(len(x))
    codes = torch.cat([net.tour_codes(as_tensor(x[i : i + 256])) for i in range(0, len(x), 256)])
    return greedy_tour(codes.cpu(), 0)


def _settings(header: container.Header) -> bytes:
    return bytes([header.version, header.delta_code, header.threads])


def log_factorial_nats(n: int) -> float:
    """log N!, the cost of an order, in nats."""
    return math.lgamma(n + 1)
