"""What a file is tied to: the model, and the float stack that computed its probabilities.

Every probability the coder uses comes from floats (the networks in float32, the tables in
float64), and a file decodes only where the decoder computes bit for bit the floats the encoder
did. Those floats depend on more than the weights: on the kernels torch picks for this CPU's
instruction set (AVX2, AVX-512 ...) and oneDNN, the device, the float32 matmul precision, the
thread count (the codec's settings carry it), numpy's own SIMD loops for exp and log, scipy's
``ndtr`` (the latent grid's normal CDF), constriction's quantisation, and the code itself.

:func:`fingerprint` hashes all of it into 32 bits. Its low byte is in the header (folded into
the header check, :func:`acn.codec.container.check_byte`), so most files from another model or
another float stack are refused before decoding; the whole 32 bits are in the check bits at the
bottom of the stack, found at the end of a decode. A fingerprint match is no proof that the
floats agree (a library may change its kernels without a version change): only a decode that
meets the check bits proves it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path

import numpy as np
import scipy
import torch

from acn.codec.ans import coder_version
from acn.version import __version__

PACKAGE = Path(__file__).resolve().parents[1]  # src/acn
# The code whose every line can change a probability or the coding order: the codec, the
# networks, the model's encode and prior calls, the bank (the tour the coder follows). The
# package version is a fixed 0.1.0, so the source stands in for it.
CODE = ("codec", "nn", "model.py", "bank")


def fingerprint(model: torch.nn.Module, settings: bytes) -> int:
    """32 bits of a SHA-256 over every tensor of the model (weights and buffers: the code bank
    too), the float stack (:func:`float_stack`) and the codec's own settings."""
    device = next(model.parameters(), torch.empty(0)).device
    h = hashlib.sha256()
    h.update(repr(float_stack(device)).encode() + settings)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return int.from_bytes(h.digest()[:4], "little")


def float_stack(device: torch.device) -> tuple[str, ...]:
    """What decides the floats besides the weights, as strings: the library versions, the
    kernels torch and numpy dispatch to on this machine, the device and the code."""
    return (
        f"torch {torch.__version__}",
        f"numpy {np.__version__}",
        f"scipy {scipy.__version__}",
        f"constriction {coder_version()}",
        f"acn {__version__}",
        f"cpu {torch.backends.cpu.get_cpu_capability()}",
        f"device {device.type}",
        f"matmul {torch.get_float32_matmul_precision()}",
        f"mkldnn {torch.backends.mkldnn.enabled}",
        f"torch build {_torch_build()}",
        f"numpy simd {_numpy_simd()}",
        f"code {code_digest()}",
    )


@functools.cache
def code_digest() -> str:
    """SHA-256 (hex) of the source files of :data:`CODE`: an edit there may change the floats,
    and it changes every fingerprint."""
    h = hashlib.sha256()
    for part in CODE:
        root = PACKAGE / part
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _torch_build() -> str:
    """A digest of torch's build description: its BLAS, oneDNN version and flags, and the CPU
    capability it runs with (``torch.__config__.show()``)."""
    return hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:16]


@functools.cache
def _numpy_simd() -> str:
    """The SIMD targets numpy dispatches its loops to on this CPU (float64 exp and log have
    AVX-512 versions); "unknown" where numpy does not say."""
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            module = importlib.import_module(name)
            features, targets = module.__cpu_features__, module.__cpu_dispatch__
        except (ImportError, AttributeError):
            continue
        return ",".join(sorted(t for t in targets if features.get(t)))
    return "unknown"
