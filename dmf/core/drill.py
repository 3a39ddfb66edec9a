"""Restore drills (pure): the scratch table's name, how a sampled row of the copy compares with the
live table, and the verdict.

A row of the copy can be checked only where the live row has not changed since the backup: its
newest write time (over the columns Cassandra reports one for) is at or before the backup's last
set. Later rows, and rows deleted since, are counted as changed, not as failures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from dmf.core.timestamps import format_ts

DRILL_SUFFIX = re.compile(r"_drill_(\d{14})$")
MAX_TABLE_NAME = 48  # Cassandra's limit on table names


def scratch_name(table: str, now: datetime) -> str:
    """`<table>_drill_<YYYYmmddHHMMSS>`, the table part cut so the whole fits Cassandra's limit."""
    suffix = f"_drill_{format_ts(now)}"
    return table[:MAX_TABLE_NAME - len(suffix)] + suffix


def drill_time(name: str) -> str | None:
    """The timestamp of a drill's scratch table, or None for any other table."""
    match = DRILL_SUFFIX.search(name)
    return match.group(1) if match else None


@dataclass
class SampleCheck:
    matched: int = 0      # equal to the live row, unchanged since the backup
    changed: int = 0      # live row written or deleted since the backup: not comparable
    mismatched: list[str] = field(default_factory=list)  # keys of rows that differ although unchanged

    def add(self, key: str, copy_row: dict, live_row: dict | None, live_written_us: int | None,
            backup_us: int) -> None:
        if live_row is None or live_written_us is None or live_written_us > backup_us:
            self.changed += 1
        elif copy_row == live_row:
            self.matched += 1
        else:
            self.mismatched.append(key)

    @property
    def sampled(self) -> int:
        return self.matched + self.changed + len(self.mismatched)


def verdict(copy_rows: int, backup_files: int, check: SampleCheck) -> tuple[bool, str]:
    """Passed, and why not."""
    if backup_files and not copy_rows:
        return False, "the copy is empty although the backup holds files"
    if check.mismatched:
        return False, (f"{len(check.mismatched)} sampled row(s) differ from the live table although unchanged "
                       f"since the backup (first: {check.mismatched[0]})")
    return True, ""
