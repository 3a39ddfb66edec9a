"""The replay's per-node state machine: resume, refusal of another replay's state, the stop message."""
from __future__ import annotations

import pytest

from dmf.core.errors import InputError
from dmf.core.replay_state import DONE, PENDING, RESTARTING, ReplayState, continue_message

HOSTS = ("10.0.0.1", "10.0.0.2", "10.0.0.3")


def test_state_round_trips_and_a_rerun_resumes_where_it_stopped():
    state = ReplayState("20260101120000", ("ks.t",))
    state.restarting("10.0.0.1", 1234)
    state.done("10.0.0.1", 42)
    state.restarting("10.0.0.2", 99)
    again = ReplayState.load(state.to_json(), "20260101120000", ["ks.t"], "/p/replay-state.json")
    assert again.node("10.0.0.1").state == DONE and again.node("10.0.0.1").mutations == 42
    assert again.node("10.0.0.1").log_offset == 1234
    assert again.node("10.0.0.2").state == RESTARTING and again.node("10.0.0.2").log_offset == 99
    assert again.node("10.0.0.3").state == PENDING
    assert again.replayed(HOSTS) == ["10.0.0.1"]


def test_a_fresh_path_starts_pending():
    assert ReplayState.load(None, "20260101120000", ["ks.t"], "/p/s").node("10.0.0.1").state == PENDING


@pytest.mark.parametrize("at, tables", [("20260101120001", ["ks.t"]), ("20260101120000", ["ks.u"])])
def test_the_state_of_another_replay_is_refused(at, tables):
    state = ReplayState("20260101120000", ("ks.t",)).to_json()
    with pytest.raises(InputError, match="state of a replay to 20260101120000"):
        ReplayState.load(state, at, tables, "/p/replay-state.json")


def test_a_damaged_state_is_refused_in_one_line():
    with pytest.raises(InputError, match="not a replay state dmf wrote"):
        ReplayState.load("{", "20260101120000", ["ks.t"], "/p/replay-state.json")


def test_stop_message_names_done_and_remaining_nodes_and_the_command():
    state = ReplayState("20260101120000", ("ks.t",))
    state.done("10.0.0.1", 5)
    text = continue_message("10.0.0.2", "did not come back UN", state, HOSTS, "dmf restore snapshot …")
    assert "replay stopped at 10.0.0.2: did not come back UN" in text
    assert "Replayed: 10.0.0.1; not replayed: 10.0.0.2, 10.0.0.3" in text
    assert text.endswith("continue with: dmf restore snapshot …") and "\n" not in text


def test_restarting_hosts_may_be_down_for_the_resume():
    from dmf.core.replay_state import restarting_hosts
    state = ReplayState("20260101120000", ("ks.t",))
    state.done("10.0.0.1", 1)
    state.restarting("10.0.0.2", 5)
    assert restarting_hosts(state.to_json()) == {"10.0.0.2"}
    assert restarting_hosts(None) == set() and restarting_hosts("{") == set()
