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
from acn.codec import container
from acn.codec.ans import Stack
from acn.codec.bitsback import (
    START_DELTA,
    Networks,
    Plan,
    as_tensor,
    decode_soft_steps,
    decode_steps,
    encode_soft_steps,
    encode_steps,
    plan_segments,
)
from acn.codec.exact import ExactNetworks
from acn.codec.fingerprint import fingerprint
from acn.errors import CodecError
from acn.model import ACN
from acn.threads import using

# Bin width of the latent grid, in posterior standard deviations: measured on the digits test
# split, single-seed files over 16 seeds, gap to the ordered bound: 0.5: +1.51%, 0.71: +1.27%,
# 1.0: +1.47% (format 1, 8 segments, nats per image: 0.18: 16.41, 0.25: 16.34, 0.5: 16.32,
# 0.71: 16.18, 1.0: 16.18). The PixelCNN reads little from z, so a coarse grid costs little.
DEFAULT_DELTA = container.delta_of(container.DEFAULT_DELTA_CODE)


@dataclass
class Encoded:
    """What :func:`encode` made.

    Attributes:
        data: the file's bytes.
        order: (N,) the original row of each image in the order :func:`decompress` returns them.
        seed: the dither seed kept (the smallest of the seeds tried).
        sizes: the file size in bytes for each seed tried.
        plan: the segments.
        header_bytes: the header's share of ``data``.
        seconds: encode time (all seeds) and verification time.
    """

    data: bytes
    order: np.ndarray
    seed: int
    sizes: list[int]
    plan: Plan
    header_bytes: int
    seconds: dict = field(default_factory=dict)

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
        segments: tour segments decoded side by side (None: the format's default,
            :func:`acn.codec.container.default_segments`, which the header need not spell).
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

    Raises:
        CodecError: images of the wrong shape or levels for the model, or a file that does not
            decode to them.
    """
    x = as_images(images, model)
    _check_options(model, seeds, first_seed, threads, soft_tour, keep_order, exact)
    n = len(x)
    segments = segments if segments is not None else container.default_segments(n)
    code = container.delta_code(delta)
    as_set = model.kind == "acn" and not keep_order
    start = time.perf_counter()
    with torch.no_grad(), using(threads):
        net = networks(model, delta, exact)
        order = _coding_order(net, x, model.kind).numpy() if not soft_tour else None
        plan = plan_segments(n, segments, container.GAP)
        recorded = 0 if exact else threads  # the exact path's bits depend on no thread count
        header = container.Header(
            model.kind, n, code, keep_order, recorded, len(plan.lengths), 0, soft_tour
        )
        kept = order if keep_order and model.kind == "acn" else None  # VAE, PixelCNN: in order
        fp = _fingerprint(model, net, _settings(code, recorded))
        coder = _Coder(net, x, plan, fp, container.images_crc(x, as_set), order, kept)
        sizes, best = [], None
        for seed in range(first_seed, first_seed + seeds):
            data, placed = coder.file(replace(header, seed=seed))
            sizes.append(len(data))
            if best is None or len(data) < len(best[1]):  # ties keep the first
                best = (seed, data, placed)
    seconds = {"encode": time.perf_counter() - start}
    seed, data, placed = best
    shown = placed if as_set else np.arange(n)
    header_bytes = len(replace(header, seed=seed).fields()) + 1
    if verify:
        start = time.perf_counter()
        with using(threads):
            _verify(model, data, x[shown])
        seconds["verify"] = time.perf_counter() - start
    return Encoded(data, shown, seed, sizes, plan, header_bytes, seconds)


@dataclass
class _Coder:
    """What every seed's file shares: the networks, the images, the plan, the fingerprint, the
    images' CRC and the coding order (None: the soft tour's) and the order kept, if any."""

    net: Networks | ExactNetworks
    x: np.ndarray
    plan: Plan
    fp: int
    crc: int
    order: np.ndarray | None
    kept: np.ndarray | None

    def file(self, header: container.Header) -> tuple[bytes, np.ndarray]:
        """One seed's file and its coding order, the stack padded up to
        MIN_BITS_PER_IMAGE bits an image where it is shorter (sets of blank copies)."""
        fields = header.fields()
        check = container.check_bits(self.fp, self.crc, fields)
        pad = 0
        for _ in range(4):  # a second pass at most: the padding's size is known to a symbol
            stack, placed = self.stack(header.seed, check, pad)
            payload = stack.to_bytes()
            more = container.pad_symbols(len(payload), header.images)
            if not more:
                return header.to_bytes(self.fp) + payload, placed
            pad += more
        raise CodecError(f"could not pad the stack of {header.images} images")  # pragma: no cover

    def stack(self, seed: int, check: int, pad: int) -> tuple[Stack, np.ndarray]:
        """One seed's stack (padding, check bits, the kept order if any, the images) and its
        coding order: the greedy tour, or the soft tour's."""
        stack = Stack()
        container.push_pad(stack, pad)
        container.push_check(stack, check)
        if self.kept is not None:
            container.push_order(stack, self.kept)
        if self.order is None:
            return stack, encode_soft_steps(stack, self.net, self.x, self.plan, seed)
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
    threads: int,
    soft_tour: bool,
    keep_order: bool,
    exact: bool,
) -> None:
    if seeds < 1 or first_seed < 0 or first_seed + seeds - 1 > container.MAX_SEED:
        raise ValueError(
            f"seeds must lie in 0..{container.MAX_SEED}, got {seeds} from {first_seed}"
        )
    if not 1 <= threads <= container.MAX_THREADS:
        raise ValueError(f"threads must be in 1..{container.MAX_THREADS}, got {threads}")
    if soft_tour and model.kind != "acn":
        raise ValueError(f"the soft tour needs an ACN (a tour through codes), not a {model.kind}")
    if soft_tour and keep_order:
        raise ValueError(
            "the soft tour codes a set (its order is the bits it saves): no keep_order"
        )
    if soft_tour and exact:
        raise ValueError(
            "the soft tour's choice scores are float logarithms: it has no exact path yet"
        )


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


def decompress(model: ACN, data: bytes) -> np.ndarray:
    """The images (N, C, H, W) of an ``.acnz`` byte string, uint8 levels: in tour order for an
    ACN file made without ``keep_order``, else in the order they were given.

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
        fp = fingerprint(model, _settings(header.delta_code, header.threads))
    else:
        net = networks(model, header.delta, header.exact)
        fp = _fingerprint(model, net, _settings(header.delta_code, header.threads))
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
    try:
        threads = header.threads or 1  # exact: any count gives the same bits; one is fastest
        with torch.no_grad(), using(threads):
            images, check, clean = _decode(model, net, header, parsed.payload)
    except (ValueError, RuntimeError, OverflowError, IndexError, MemoryError) as error:
        # Garbage can drive the coder or a table outside its domain: still one clear error.
        raise CodecError(f"corrupted or truncated file ({error})") from None
    crc = container.images_crc(images, model.kind == "acn" and not header.keep_order)
    if check != container.check_bits(fp, crc, parsed.fields) or not clean:
        raise CodecError(
            "the file does not decode correctly with this model: it is damaged or truncated, "
            f"or was made by {ELSEWHERE}"
        )
    return images


def _decode(
    model: ACN, net, header: container.Header, payload: bytes
) -> tuple[np.ndarray, int, bool]:
    """The images, the check bits and whether only padding was left below them."""
    plan = plan_segments(header.images, header.segments, container.GAP)
    if len(plan.lengths) != header.segments:
        raise CodecError("corrupted file: its segment count does not fit its image count")
    stack = Stack(payload)
    decode = decode_soft_steps if header.soft_tour else decode_steps
    x = decode(stack, net, plan, header.seed, model.info.image_shape)
    if header.keep_order and model.kind == "acn":
        order = container.pop_order(stack, header.images)
        restored = np.empty_like(x)
        restored[order] = x
        x = restored
    check = container.pop_check(stack)
    return x, check, container.pop_pad(stack)


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


def _settings(delta_code: int, threads: int) -> bytes:
    return bytes([container.FORMAT_VERSION, delta_code, threads])


def log_factorial_nats(n: int) -> float:
    """log N!, the cost of an order, in nats."""
    return math.lgamma(n + 1)
