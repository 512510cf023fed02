"""acn: Associative Compression Networks (Graves, Menick, van den Oord, 2018)."""

__version__ = "0.1.0"

from acn.codebank import CodeBank  # noqa: E402
from acn.config import Config, load_config  # noqa: E402
from acn.measure import measure  # noqa: E402
from acn.model import ACN, LossTerms  # noqa: E402

__all__ = ["ACN", "CodeBank", "Config", "LossTerms", "__version__", "load_config", "measure"]
