"""acn: Associative Compression Networks (Graves, Menick, van den Oord, 2018).

The public names load on first use (PEP 562), so that ``import acn`` and ``acn --help`` do not
import torch::

    import acn
    model = acn.ACN.from_pretrained("path/to/exported")   # torch is imported here
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from acn.version import __version__

# Public name -> the module that defines it.
_PUBLIC = {
    "ACN": "acn.model",
    "LossTerms": "acn.model",
    "CodeBank": "acn.bank.codebank",
    "Config": "acn.config",
    "load_config": "acn.config",
    "measure": "acn.eval.measure",
}

__all__ = ["ACN", "CodeBank", "Config", "LossTerms", "__version__", "load_config", "measure"]

if TYPE_CHECKING:  # for type checkers and IDEs only; nothing is imported at run time
    from acn.bank.codebank import CodeBank
    from acn.config import Config, load_config
    from acn.eval.measure import measure
    from acn.model import ACN, LossTerms


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'acn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
