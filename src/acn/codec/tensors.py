"""A step's images as the networks' input: the one conversion the encoder and the decoder
share (:mod:`acn.codec.bitsback`, :mod:`acn.codec.softtour`, :mod:`acn.codec.segments`)."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """One batch of uint8 images (B, C, H, W) as the networks' integer input: the set stays
    uint8 and only a step's images are widened.

    Always with the standard strides: torch picks kernels by strides, and a view with a zero
    stride on its one channel (``a[:, None]``) ran other convolution kernels than the decoder's
    fresh tensors, with other floats, and the file did not decode.
    """
    wide = torch.from_numpy(np.ascontiguousarray(images)).long()
    return wide.clone(memory_format=torch.contiguous_format)
