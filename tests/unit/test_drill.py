"""Restore drills: scratch names, and how a sampled row of the copy is judged."""
from __future__ import annotations

from dmf.core.drill import MAX_TABLE_NAME, SampleCheck, drill_time, scratch_name, verdict
from dmf.core.timestamps import parse_ts

NOW = parse_ts("20260101120000")
BACKUP_US = int(NOW.timestamp() * 1_000_000)


def test_scratch_names_fit_and_are_recognised():
    assert scratch_name("events", NOW) == "events_drill_20260101120000"
    long = scratch_name("t" * 48, NOW)
    assert len(long) == MAX_TABLE_NAME and long.endswith("_drill_20260101120000")
    assert drill_time(long) == "20260101120000" and drill_time("events") is None


def test_rows_changed_since_the_backup_are_not_failures_but_unchanged_differences_are():
    check = SampleCheck()
    row = {"id": 1, "v": "a"}
    check.add("id=1", row, dict(row), BACKUP_US - 1, BACKUP_US)            # unchanged, equal
    check.add("id=2", row, {"id": 1, "v": "b"}, BACKUP_US + 1, BACKUP_US)  # written since
    check.add("id=3", row, None, None, BACKUP_US)                          # deleted since
    assert (check.matched, check.changed, check.mismatched) == (1, 2, [])
    assert verdict(10, 5, check) == (True, "")
    check.add("id=4", row, {"id": 1, "v": "b"}, BACKUP_US, BACKUP_US)      # unchanged, yet different
    passed, why = verdict(10, 5, check)
    assert not passed and "1 sampled row(s) differ" in why and "id=4" in why and check.sampled == 4


def test_an_empty_copy_of_a_backup_with_files_fails():
    assert verdict(0, 3, SampleCheck())[0] is False
    assert verdict(0, 0, SampleCheck()) == (True, "")
