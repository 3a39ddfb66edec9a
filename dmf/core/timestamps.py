"""`YYYYmmddHHMMSS` timestamps, always UTC: the bucket's keys and the CLI's --time options."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from dmf.core.errors import InputError, quote

TS_FORMAT = "%Y%m%d%H%M%S"
# [0-9], not str.isdigit(): that also accepts '²' and non-ASCII digits, which would not round-trip.
_TS_TEXT = re.compile(r"[0-9]{14}")
_EXPECTED = "expected YYYYmmddHHMMSS (UTC)"


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def parse_ts(value: str | int | datetime, *, name: str = "time") -> datetime:
    """Reads a timestamp as UTC. Ints are accepted: Prefect passes `--param time=20250101120000` as JSON."""
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):  # bool is an int, never a time
        raise InputError(f"invalid {name}: {_EXPECTED}, got {type(value).__name__} {quote(value)}")
    text = str(value)
    if not _TS_TEXT.fullmatch(text):
        raise InputError(f"invalid {name} {quote(text)}: {_EXPECTED}")
    try:
        # Fixed-width fields, read by position; datetime() rejects month 13, 30 February, hour 24.
        return datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                        int(text[12:14]), tzinfo=timezone.utc)
    except ValueError:
        raise InputError(f"invalid {name} {quote(text)}: no such date or time ({_EXPECTED})") from None


def format_ts(dt: datetime) -> str:
    """14 digits, UTC (naive is read as UTC). Zero-padded by hand: glibc's strftime('%Y') gives '999' for 0999."""
    utc = _as_utc(dt)
    return f"{utc.year:04d}{utc.month:02d}{utc.day:02d}{utc.hour:02d}{utc.minute:02d}{utc.second:02d}"


def utcnow() -> datetime:
    """Now, to the second: the resolution of the keys, so a set's time equals what its key says."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def parse_window(start_time: str | int | None, end_time: str | int | None) -> tuple[datetime | None, datetime | None]:
    """The --start-time / --end-time window (either may be absent); a start after the end is refused."""
    start = parse_ts(start_time, name="--start-time") if start_time not in (None, "") else None
    end = parse_ts(end_time, name="--end-time") if end_time not in (None, "") else None
    if start is not None and end is not None and start > end:
        raise InputError(f"--start-time {format_ts(start)} is after --end-time {format_ts(end)}")
    return start, end
