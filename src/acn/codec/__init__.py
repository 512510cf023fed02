"""Compression of image sets into real files: bits-back coding along the ACN's tour.

Layers, bottom up: :mod:`~acn.codec.ans` (the entropy coder, no networks),
:mod:`~acn.codec.latents` (the latent grid and its tables), :mod:`~acn.codec.pixels` (a
decoder's pixel distributions), :mod:`~acn.codec.container` (the file's header and checks),
:mod:`~acn.codec.fingerprint` (the model and float stack a float file is tied to),
:mod:`~acn.codec.intmath`, :mod:`~acn.codec.intnet` and :mod:`~acn.codec.exact` (the exact
path: every probability in integers, files that decode on any machine),
:mod:`~acn.codec.bitsback` (the coding steps) and :mod:`~acn.codec.files` (``compress``,
``decompress``).
"""

from acn.codec.files import Encoded, compress, decompress, encode

__all__ = ["Encoded", "compress", "decompress", "encode"]
