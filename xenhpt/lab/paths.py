"""Where the lab keeps its downloads, builds and the state of the running guest."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Downloads and builds shared by every lab run (``$XENHPT_CACHE``)."""
    return Path(os.environ.get("XENHPT_CACHE", Path.home() / ".cache" / "xenhpt"))


def run_dir() -> Path:
    """State of the one running lab guest (``$XENHPT_LAB_DIR``; tests use their own)."""
    return Path(os.environ.get("XENHPT_LAB_DIR", cache_dir() / "lab"))
