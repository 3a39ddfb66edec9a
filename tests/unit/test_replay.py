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


def test_replay_option_round_trips_and_a_leftover_is_removed():
    from dmf.replay import REPLAY_MARKER, with_replay_option, without_replay_option
    original = "# site options\n-Xss512k\n"
    with_option = with_replay_option(original, ["ks.t", "ks.u"])
    assert with_option == f"{original}{REPLAY_MARKER}\n-Dcassandra.replayList=ks.t,ks.u\n"
    assert without_replay_option(with_option) == original
    # Applied twice (a killed run's line still there), the file holds one replay line.
    assert with_replay_option(with_option, ["ks.v"]).count("-Dcassandra.replayList") == 1
    # An operator's own replayList line, without dmf's marker, is never touched.
    own = "-Dcassandra.replayList=mine.t\n"
    assert without_replay_option(own) == own
    assert with_replay_option("-Xss512k", ["ks.t"]).startswith("-Xss512k\n")


def test_restore_keys_are_stripped_as_a_killed_run_left_them():
    from dmf.replay import without_restore_keys
    left = replay_properties("archive_command=/bin/ln %path /a/%name\n", "/r", datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert without_restore_keys(left) == "archive_command=/bin/ln %path /a/%name\n"


def test_filter_must_reach_cassandra():
    import pytest
    from dmf.replay import ReplayError, check_filter_reached
    check_filter_reached("INFO Tables to be replayed: {ks=[t, u]}\nINFO Log replay complete, 5 replayed mutations",
                         ["ks.t", "ks.u"], "10.0.0.1")
    with pytest.raises(ReplayError, match="did not reach Cassandra .*every table"):
        check_filter_reached("INFO All tables will be included in commit log replay.\n", ["ks.t"], "10.0.0.1")
    with pytest.raises(ReplayError, match="did not reach Cassandra"):
        check_filter_reached("nothing about replay\n", ["ks.t"], "10.0.0.1")
    with pytest.raises(ReplayError, match="lacks ks.u"):
        check_filter_reached("Tables to be replayed: {ks=[t], other=[u]}\n", ["ks.t", "ks.u"], "10.0.0.1")


def test_the_plain_config_comes_from_the_saved_original_never_a_live_file_a_killed_run_left():
    from dmf.replay import plain_config, without_restore_keys
    original = "archive_command=/bin/ln %path /a/%name\n"
    replaying = replay_properties(original, "/r", datetime(2025, 1, 2, tzinfo=timezone.utc))
    truncated = ""  # what an in-place rewrite killed after its truncation left
    assert plain_config(original, truncated, without_restore_keys) == original
    assert plain_config(original, replaying, without_restore_keys) == original
    assert plain_config(None, replaying, without_restore_keys) == original  # no saved copy: the live file, stripped
    assert plain_config(None, None, without_restore_keys) is None

