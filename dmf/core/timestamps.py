"""`YYYYmmddHHMMSS` timestamps, always UTC: the bucket's keys and the CLI's --time options."""
from __future__ import annotations

from datetime import datetime, timezone

from dmf.core.errors import InputError

TS_FORMAT = "%Y%m%d%H%M%S"
TS_LENGTH = 14


def parse_ts(value: str | int | datetime, *, name: str = "time") -> datetime:
    """Reads a timestamp as UTC. Ints are accepted: `prefect deployment run --param time=…` sends JSON."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"invalid {name} {value!r}: expected YYYYmmddHHMMSS (UTC)")
    text = str(value).strip()
    if len(text) != TS_LENGTH or not text.isdigit():
        raise InputError(f"invalid {name} '{text}': expected YYYYmmddHHMMSS (UTC)")
    try:
        return datetime.strptime(text, TS_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise InputError(f"invalid {name} '{text}': not a real date and time (YYYYmmddHHMMSS, UTC)") from None


def format_ts(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime(TS_FORMAT)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
