"""A rerun of a scratch replay reuses the one in PATH only when it was recorded complete for exactly
the same inputs and its files are as recorded; anything else replays again."""
from __future__ import annotations

import pytest

from dmf.core.scratch import REPLAY_RECORD, Layout, Reuse, replay_inputs, replay_record, reusable
from dmf.scratch_cassandra import keep_only_replayed, previous_replay, remove_leftovers, write_record

SEGMENTS = {"host-a/CommitLog-8-1.log": (1048576, "a" * 64), "host-b/CommitLog-8-1.log": (1048576, "b" * 64)}
NODES = {"host-a": {"segments": 1, "segments_read": 1, "mutations": 120, "seconds": 14.2},
         "host-b": {"segments": 1, "segments_read": 1, "mutations": 80, "seconds": 13.9}}
FILES = {"host-a/ks/events/da-1-bti-Data.db": 4096, "host-b/ks/events/da-1-bti-Data.db": 2048}


def inputs(**changed) -> dict:
    given = dict(version="5.0.2", at="20261204120000", schema=["CREATE KEYSPACE ks ...", "CREATE TABLE ks.events ..."],
                 tables=["ks.events"], segments=SEGMENTS)
    return replay_inputs(**{**given, **changed})


def test_the_same_inputs_and_files_reuse_the_recorded_counts():
    found = reusable(replay_record(inputs(), NODES, FILES), inputs(), FILES)
    assert found.nodes == NODES and found.reason == ""


def test_the_order_segments_tables_and_files_come_in_does_not_matter():
    record = replay_record(inputs(tables=["ks.a", "ks.b"]), NODES, FILES)
    reordered = inputs(segments=dict(reversed(SEGMENTS.items())), tables=["ks.b", "ks.a"])
    assert reusable(record, reordered, dict(reversed(FILES.items()))).nodes == NODES


@pytest.mark.parametrize("changed, named", [
    (dict(at="20261204120001"), "restore time"),
    (dict(version="5.0.3"), "Cassandra version"),
    (dict(schema=["CREATE KEYSPACE ks ...", "CREATE TABLE ks.events ... WITH ID = other"]), "schema"),
    (dict(tables=["ks.events", "ks.other"]), "tables"),
    (dict(segments={**SEGMENTS, "host-c/CommitLog-8-2.log": (1048576, "c" * 64)}), "segments"),
    (dict(segments={"host-a/CommitLog-8-1.log": SEGMENTS["host-a/CommitLog-8-1.log"]}), "segments"),
    (dict(segments={**SEGMENTS, "host-a/CommitLog-8-1.log": (524288, "a" * 64)}), "segments"),
    (dict(segments={**SEGMENTS, "host-a/CommitLog-8-1.log": (1048576, "d" * 64)}), "segments"),
])
def test_any_input_that_differs_replays_again_and_says_which(changed, named):
    found = reusable(replay_record(inputs(), NODES, FILES), inputs(**changed), FILES)
    assert found.nodes is None and found.reason == f"it was made for another {named}"


def test_a_record_of_another_format_is_not_reused():
    older = replay_record({**inputs(), "format": 0}, NODES, FILES)
    assert reusable(older, inputs(), FILES).reason == "it was made for another record format"


def test_no_record_or_an_unreadable_one_replays_again():
    assert reusable(None, inputs(), FILES) == Reuse(None, "no complete replay")
    for broken in ("", "{", "[]", '{"inputs": {}}', replay_record(inputs(), NODES, FILES)[:-20]):
        assert reusable(broken, inputs(), FILES).reason == "its record is unreadable"


@pytest.mark.parametrize("files", [
    {"host-a/ks/events/da-1-bti-Data.db": 4096},                      # one gone
    {**FILES, "host-a/ks/events/da-2-bti-Data.db": 10},               # one added
    {**FILES, "host-b/ks/events/da-1-bti-Data.db": 2047},             # one cut short
])
def test_output_changed_since_the_record_replays_again(files):
    found = reusable(replay_record(inputs(), NODES, FILES), inputs(), files)
    assert found.nodes is None and "1 of its files are missing, added or of another size" in found.reason


def scratch_home(tmp_path):
    """A stopped scratch node's folder as a replay leaves it, before the record."""
    home = tmp_path / "scratch-cassandra"
    for name, size in FILES.items():
        (home / "replayed" / name).parent.mkdir(parents=True, exist_ok=True)
        (home / "replayed" / name).write_bytes(b"x" * size)
    for folder in ("data/system", "commitlog", "logs", "conf"):
        (home / folder).mkdir(parents=True)
    (home / "commitlog" / "CommitLog-8-99.log").write_bytes(b"\0" * 100)
    (home / "cassandra.pid").write_text("1\n")
    return home


def test_a_completed_replay_keeps_its_sstables_alone_and_a_rerun_reuses_it(tmp_path):
    home = scratch_home(tmp_path)
    keep_only_replayed(home)
    write_record(Layout.under(str(tmp_path)), inputs(), NODES)
    assert sorted(p.name for p in home.iterdir()) == [REPLAY_RECORD, "replayed"]
    assert previous_replay(tmp_path, inputs()).nodes == NODES
    assert previous_replay(tmp_path, inputs(at="20261204120001")).nodes is None


def test_a_replay_killed_before_its_record_is_not_reused(tmp_path):
    """Killed before the record's rename: its `.part` (or nothing) is there, never the record."""
    home = scratch_home(tmp_path)
    (home / f"{REPLAY_RECORD}.part").write_text(replay_record(inputs(), NODES, FILES))
    assert previous_replay(tmp_path, inputs()).reason == "no complete replay"


def test_removing_the_folder_takes_the_record_first(tmp_path, monkeypatch):
    """A removal cut short (here: the tree's removal fails) leaves no record a rerun would trust."""
    home = scratch_home(tmp_path)
    keep_only_replayed(home)
    write_record(Layout.under(str(tmp_path)), inputs(), NODES)

    def cut_short(path):
        raise OSError("killed mid-removal")
    monkeypatch.setattr("dmf.scratch_cassandra.shutil.rmtree", cut_short)
    with pytest.raises(OSError):
        remove_leftovers(home)
    assert (home / "replayed").is_dir() and previous_replay(tmp_path, inputs()).nodes is None
