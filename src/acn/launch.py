"""What a launcher such as torchrun tells this process through its environment.

torchrun starts each copy of a command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. This
module reads them without importing torch, so that the command line can label an error with its
rank before (or without) loading the library; :mod:`acn.distributed` joins the group they describe.
"""

from __future__ import annotations

import os


def launched_world() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int | None:
    """This process's rank when a launcher started several, else None."""
    if launched_world() <= 1:
        return None
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's place among the launcher's processes on its machine (its GPU's index)."""
    return int(os.environ.get("LOCAL_RANK", "0"))
