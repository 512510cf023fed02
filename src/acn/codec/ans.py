"""The entropy coder: a stack of ANS symbols over ``constriction``, knowing nothing of networks.

Asymmetric numeral systems are last in, first out: :meth:`Stack.push` puts symbols on top and
:meth:`Stack.pop` takes them off in the order they were pushed in one call (``constriction``'s
``encode_reverse`` / ``decode``). Popping *receives* bits, which is what bits-back coding needs:
a pop with a distribution draws a symbol from it, paid for by whatever lies on the stack, and
the matching push on the other side puts those bits back.

Every distribution is given as numpy arrays, one row per symbol: a probability of one for
Bernoulli symbols, a probability table for categorical ones (``constriction`` quantises both to
24-bit fixed point, deterministically, so identical floats give identical codes on both sides),
and an alphabet size for uniform ones. :func:`quantized_counts` turns a table into integer
counts for the dithered pops of :mod:`acn.codec.latents`, whose arithmetic is integer only.

The version is pinned in the file's fingerprint: a change in ``constriction``'s quantisation
would change every code.
"""

from __future__ import annotations

import sys

import constriction
import numpy as np

from acn.errors import CodecError


def coder_version() -> str:
    """The installed ``constriction`` version (part of every file's fingerprint)."""
    from importlib.metadata import version

    return version("constriction")


class Stack:
    """An ANS stack of 32-bit words.

    Args:
        data: the bytes of an earlier :meth:`to_bytes`, or None for an empty stack.
    """

    def __init__(self, data: bytes | None = None) -> None:
        stream = constriction.stream
        self._model = stream.model
        if data:
            padded = data + b"\0" * (-len(data) % 4)  # to_bytes dropped the top word's zero bytes
            words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
            try:
                self._coder = stream.stack.AnsCoder(words)
            except ValueError as error:  # e.g. a truncated stream ending in a zero word
                raise CodecError(f"corrupted or truncated compressed data ({error})") from None
        else:
            self._coder = stream.stack.AnsCoder()
        self._bernoulli = self._model.Bernoulli(perfect=False)
        self._categorical = self._model.Categorical(perfect=False)
        self._uniform = self._model.Uniform()

    # --- push: put symbols on top (the matching pop returns them in this order) -------------

    def push_bernoulli(self, bits: np.ndarray, p_one: np.ndarray) -> None:
        """Push binary symbols (n,) with P(1) = ``p_one`` (n,)."""
        self._coder.encode_reverse(_int32(bits), self._bernoulli, _float64(p_one))

    def push_categorical(self, symbols: np.ndarray, table: np.ndarray) -> None:
        """Push symbols (n,) in ``0 .. K-1`` under probability rows ``table`` (n, K)."""
        self._coder.encode_reverse(_int32(symbols), self._categorical, _float64(table))

    def push_uniform(self, symbols: np.ndarray, sizes: np.ndarray) -> None:
        """Push symbols (n,) uniform on ``0 .. sizes - 1`` (each size at least 2)."""
        self._coder.encode_reverse(_int32(symbols), self._uniform, _int32(sizes))

    # --- pop: take symbols off the top, drawing them from the distribution given -------------

    def pop_bernoulli(self, p_one: np.ndarray) -> np.ndarray:
        return self._coder.decode(self._bernoulli, _float64(p_one))

    def pop_categorical(self, table: np.ndarray) -> np.ndarray:
        return self._coder.decode(self._categorical, _float64(table))

    def pop_uniform(self, sizes: np.ndarray) -> np.ndarray:
        return self._coder.decode(self._uniform, _int32(sizes))

    # --- the bytes ---------------------------------------------------------------------------

    @property
    def bits(self) -> int:
        """Bits the stack holds now (what :meth:`to_bytes` writes, before byte rounding)."""
        return int(self._coder.num_valid_bits())

    def is_empty(self) -> bool:
        return bool(self._coder.is_empty())

    def to_bytes(self) -> bytes:
        """The stack as little-endian words, without the top word's high zero bytes (a reader
        pads them back)."""
        words = self._coder.get_compressed()
        if sys.byteorder != "little":  # pragma: no cover - no big-endian machine here
            words = words.byteswap()
        return words.astype("<u4").tobytes().rstrip(b"\0")


def quantized_counts(table: np.ndarray, total: int) -> np.ndarray:
    """Integer counts (n, K) summing to ``total`` per row, close to ``table * total``: the
    floor of the scaled table, the remainder to the largest fractional parts (ties to the lower
    symbol). Integer results from identical floats, on any machine.

    A symbol of mass below about 1/total may get no count: it can then never be drawn. That is
    what a proposal distribution wants (a floor of one count per symbol would put 1/total on
    every far-tail bin, and with a hundred bins per dimension a popped latent would land in the
    tail every few images, each time costing tens of bits).
    """
    n, k = table.shape
    p = table / table.sum(axis=1, keepdims=True)
    scaled = p * total
    counts = np.floor(scaled).astype(np.int64)
    short = total - counts.sum(axis=1)  # (n,) counts still to hand out, < K
    # Largest fractional parts first; a stable sort keeps ties in symbol order.
    order = np.argsort(-(scaled - counts), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(k)[None].repeat(n, 0), axis=1)
    return counts + (ranks < short[:, None])


def _int32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int32)


def _float64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)
