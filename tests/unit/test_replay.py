from datetime import datetime, timezone

from dmf.replay import replay_properties, restore_point


def test_restore_point_format_is_cassandras():
    assert restore_point(datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)) == "2025:03:04 05:06:07"


def test_replay_properties_keep_archive_command_and_replace_restore_keys():
    original = "archive_command=/bin/ln %path /a/%name\nrestore_point_in_time=2000:01:01 00:00:00\n"
    text = replay_properties(original, "/r/dir", datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    lines = text.splitlines()
    assert lines[0] == "archive_command=/bin/ln %path /a/%name"
    assert "restore_directories=/r/dir" in lines and "restore_command=/bin/cp -f %from %to" in lines
    assert [line for line in lines if line.startswith("restore_point_in_time")] == [
        "restore_point_in_time=2025:01:02 03:04:05"]
    assert "precision=MICROSECONDS" in lines
