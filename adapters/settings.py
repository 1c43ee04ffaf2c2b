"""Where qloop keeps its local state: artifacts and local simulator jobs."""

from __future__ import annotations

import os
from pathlib import Path


def qloop_home() -> Path:
    """`QLOOP_HOME`, or `.qloop` in the working directory; created on first use."""
    home = Path(os.environ.get("QLOOP_HOME", ".qloop")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home
