"""What machine a number was measured on: CPU model and load (TF-free, for benchmark JSON)."""

from __future__ import annotations

import os
import platform
from typing import Optional


def cpu_model() -> str:
    """The ``model name`` line of ``/proc/cpuinfo``, else ``platform.processor()`` (may be
    empty)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            found = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        found = ""
    return found or platform.processor() or ""


def load_average() -> Optional[tuple[float, float, float]]:
    """The 1-, 5- and 15-minute load averages, or None where the system has none."""
    try:
        return os.getloadavg()
    except OSError:
        return None
