"""A run's bandwidth limit, checked where the CLI and the flows parse their input (pure)."""
from __future__ import annotations

import math

from dmf.core.errors import InputError


def check_limit(mib_s: float | None, option: str) -> float | None:
    """A run's limit as given, or InputError in one line when it is not a positive number of MiB/s."""
    if mib_s is not None and not (mib_s > 0 and math.isfinite(mib_s)):
        raise InputError(f"{option} must be a positive number of MiB/s, not {mib_s:g}")
    return mib_s
