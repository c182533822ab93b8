"""Progress bars for the trainer: a leaf without torch, so the feature cache (which a
benchmark and the cache tools use alone) does not load torch for its bar."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["progress"]


def progress(enabled: bool = True, **kwargs: Any):
    """A tqdm bar on a terminal, for the first process of a ``torchrun`` job only, and not
    under ``-q`` (which sets the log level above warnings)."""
    from tqdm import tqdm

    quiet = (not enabled or not sys.stderr.isatty() or os.environ.get("RANK", "0") != "0"
             or logging.getLogger().getEffectiveLevel() > logging.WARNING)
    return tqdm(disable=quiet, leave=False, dynamic_ncols=True, **kwargs)
