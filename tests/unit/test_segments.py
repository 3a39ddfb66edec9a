"""Commit-log segments on a node: whether it archives any, and how many one batch takes."""
from __future__ import annotations

from datetime import timedelta

from dmf.core.segments import archiving_problem, fitting


def test_a_properties_file_without_an_archive_command_is_named():
    assert archiving_problem("archive_command=/bin/ln %path /a/%name\n") is None
    assert archiving_problem("# comment\narchive_command : /bin/ln %path /a/%name\n") is None
    assert archiving_problem("") == "it has no archive_command"
    assert archiving_problem("#archive_command=/bin/ln %path /a/%name\nrestore_command=\n") == \
        "it has no archive_command"
    assert archiving_problem("archive_command=\n") == "its archive_command is empty"


def test_a_throttled_batch_takes_the_oldest_segments_its_limit_sends_within_the_hour():
    mib = 2**20
    sizes = [32 * mib] * 10
    assert fitting(sizes, None) == 10                                   # not limited: everything
    assert fitting(sizes, 1.0, timedelta(seconds=100)) == 3             # 100 MiB: three 32 MiB segments
    assert fitting(sizes, 1.0, timedelta(seconds=10)) == 1              # one at least, whatever its size
    assert fitting(sizes, 10.0) == 10 and fitting([], 1.0) == 0
