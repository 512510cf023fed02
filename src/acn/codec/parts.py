"""Parts: a file's coding order cut into P contiguous runs, each an independent stack with its
own segments, so that P processes decode one each, side by side.

A stack is one sequence of pops: the decoder of one stack is a single thread of work, and on
the per-pixel batches of a PixelCNN a second torch thread only slows it (docs/codec.md). Two
stacks are two sequences: the second core decodes the second. Each part carries the file's
check bits (its first pops need them, and each part's images are checked against the whole
file's), so a part costs about :data:`acn.codec.segments.PART_BITS`.

Part p holds images ``sizes[p]`` and segments ``segments[p]``, both split as evenly as they
go (the first parts one more). Its stack is coded exactly as a one-part file's: the greedy
tour's run for the ACN (or, with the soft tour, the run's images as a set), the images' own
order for the VAE and PixelCNN. A kept order (``keep_order``) is pushed in part 0 only.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from acn.codec import container
from acn.codec.bitsback import Plan, plan_growing, plan_segments
from acn.errors import CodecError


def split(total: int, parts: int) -> list[int]:
    """``total`` cut into ``parts`` counts as even as they go, the first ones larger."""
    return [total // parts + (p < total % parts) for p in range(parts)]


def starts(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def plan_of(version: int, images: int, segments: int) -> Plan:
    """One stack's segments: format 4's growing joins, format 3's staircase of gaps."""
    if version == 3:
        return plan_segments(images, segments, container.GAP)
    return plan_growing(images, segments)


def plans(images: int, segments: int, parts: int, version: int, settle: bool = True) -> list[Plan]:
    """Each part's segments: S and N split evenly. The encoder (``settle``) lowers S until every
    part's share fits its images, so that a decoder's one split of the header's S gives the
    same plans back (or fewer segments than the header says: one that does not fit)."""
    sizes = split(images, parts)
    for _ in range(parts + 1):  # each pass lowers some part's share; settled within P
        made = [
            plan_of(version, size, share)
            for size, share in zip(sizes, split(segments, parts), strict=True)
        ]
        fitted = sum(len(plan.lengths) for plan in made)
        if fitted == segments or not settle:
            return made
        segments = fitted
    raise CodecError(f"no plan of {segments} segments in {parts} parts")  # pragma: no cover


def payloads(payload: bytes, part_bytes: tuple[int, ...]) -> list[bytes]:
    """The parts' stacks: the lengths of all but the last, the last the rest."""
    edges = [0, *np.cumsum(part_bytes).tolist(), len(payload)]
    return [payload[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def run_side_by_side(work, jobs: list[tuple], workers: int) -> list:
    """``work(*job)`` for every job, the first in this process and the rest in up to
    ``workers - 1`` spawned processes (fresh interpreters: a forked child would inherit
    torch's thread pool in whatever state this process left it). Results in job order; the
    first error raised, after every job has ended."""
    if workers <= 1 or len(jobs) == 1:
        return [work(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    # Pickled here, before this process starts on the first job: the pool pickles its jobs in
    # a thread of its own, which would read the model while the first job runs on it.
    blobs = [pickle.dumps(job) for job in jobs[1:]]
    try:
        with ProcessPoolExecutor(min(workers, len(jobs)) - 1, mp_context=context) as pool:
            futures = [pool.submit(_unpickled, work, blob) for blob in blobs]
            first = work(*jobs[0])
            return [first, *(future.result() for future in futures)]
    except BrokenProcessPool as error:  # the machine's failure, not the file's
        raise CodecError(
            f"a decoding process died ({error}); decode in one process instead (workers=1, "
            "acn decompress --workers 1)"
        ) from None


def _unpickled(work, blob: bytes):
    return work(*pickle.loads(blob))
