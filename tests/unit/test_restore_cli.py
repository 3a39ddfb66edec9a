"""`dmf restore snapshot`'s PATH: absolute before any flow starts, refused relative with -a."""
from __future__ import annotations

from typer.testing import CliRunner

from dmf.cli import app

runner = CliRunner()


def test_async_with_a_relative_path_is_refused_in_one_line():
    result = runner.invoke(app, ["restore", "snapshot", "127.0.0.1", "restore", "ks.t", "-a"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "dmf: error: PATH 'restore' is relative: a queued or deployed run would resolve it in the Prefect "
        "worker's temporary directory; give an absolute path"]


def test_without_async_a_relative_path_is_resolved_before_the_flow_starts(monkeypatch, tmp_path):
    import dmf.cli
    import dmf.flows.restore_snapshot

    received = {}

    def flow(**params):
        received.update(params)
        return {"db_target": "ks.t", "into": None, "time": "20250101120000", "snapshot_ts": "20250101110000", "increments": [],
                "hosts": ["127.0.0.1"], "files": 3, "bytes": 3072, "loaded": ["x"], "seconds": 1.0,
                "path": params["path"], "path_peak_bytes": 5 * 2**20, "kept_files": False, "removed_files": 3,
                "commitlog_dir": None, "commitlog_segments": 0, "replayed_mutations": {}}

    monkeypatch.setattr(dmf.flows.restore_snapshot, "restore_snapshot", flow)
    monkeypatch.setattr(dmf.cli, "run_guarded", lambda call: call())
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["restore", "snapshot", "127.0.0.1", "restore", "ks.t"])
    assert result.exit_code == 0, result.output
    assert received["path"] == f"{tmp_path}/restore" and received["keep_files"] is False
    assert received["mode"] == "node"  # the node path unless --mode says otherwise
    assert f"PATH {tmp_path}/restore needed 5.0 MiB at peak; downloaded files removed (3)" in result.stdout

    result = runner.invoke(app, ["restore", "snapshot", "127.0.0.1", "/abs/restore", "ks.t", "--keep-files"])
    assert received["path"] == "/abs/restore" and received["keep_files"] is True


def test_replay_on_is_scratch_or_nodes_and_into_replays_only_in_a_scratch_node():
    result = runner.invoke(app, ["restore", "snapshot", "127.0.0.1", "/abs/r", "ks.t", "--replay-commitlogs",
                                 "--replay-on", "elsewhere"])
    assert result.exit_code == 2 and "invalid --replay-on 'elsewhere': scratch or nodes" in result.stderr
    result = runner.invoke(app, ["restore", "snapshot", "127.0.0.1", "/abs/r", "ks.t", "--replay-commitlogs",
                                 "--replay-on", "nodes", "--into", "ks.copy"])
    assert result.exit_code == 2 and "leave --replay-on nodes out" in result.stderr
