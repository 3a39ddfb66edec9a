"""--max-upload-mib-s and --max-download-mib-s: a bad value is refused in one line before any flow
starts; a good one reaches the flow as its per-run override."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dmf.cli import app

runner = CliRunner()


@pytest.mark.parametrize("argv, option", [
    (["backup", "snapshot", "127.0.0.1", "--max-upload-mib-s", "0"], "--max-upload-mib-s"),
    (["backup", "commitlogs", "--max-upload-mib-s", "-2"], "--max-upload-mib-s"),
    (["restore", "snapshot", "127.0.0.1", "/abs/restore", "ks.t", "--max-download-mib-s", "0"],
     "--max-download-mib-s"),
])
def test_a_limit_that_is_not_positive_is_refused_in_one_line(argv, option):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"dmf: error: {option} must be a positive number of MiB/s, not ")


def test_the_limits_reach_the_flows(monkeypatch):
    import dmf.cli
    import dmf.flows.backup_snapshot
    import dmf.flows.restore_snapshot

    received = {}

    def backup(**params):
        received["backup"] = params
        return {"kind": "full", "set_ts": "s", "snapshot_ts": "s", "hosts": ["127.0.0.1"], "files": 0, "bytes": 0,
                "seconds": 1.0, "transfer_seconds": 1.0, "mb_per_s": 0.0, "why_full": ""}

    def restore(**params):
        received["restore"] = params
        raise SystemExit(0)  # its summary is another test's business

    monkeypatch.setattr(dmf.flows.backup_snapshot, "backup_snapshot", backup)
    monkeypatch.setattr(dmf.flows.restore_snapshot, "restore_snapshot", restore)
    monkeypatch.setattr(dmf.cli, "run_guarded", lambda call: call())
    assert runner.invoke(app, ["backup", "snapshot", "127.0.0.1", "--max-upload-mib-s", "12.5"]).exit_code == 0
    assert received["backup"]["max_upload_mib_s"] == 12.5
    runner.invoke(app, ["restore", "snapshot", "127.0.0.1", "/abs/restore", "ks.t", "--max-download-mib-s", "30"])
    assert received["restore"]["max_download_mib_s"] == 30
    assert runner.invoke(app, ["backup", "snapshot", "127.0.0.1"]).exit_code == 0
    assert received["backup"]["max_upload_mib_s"] is None  # the repository block's limit applies
