"""`dmf backup verify`: options refused before any run, the report as a table or JSON, and the exit status."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dmf.cli import app
from dmf.core.keys import SetRef
from dmf.core.targets import DbTarget
from dmf.core.verify import MISSING, STRAY, Finding, build_report, select_sets

from .test_verify import CATALOG, S1, TABLE, ts

runner = CliRunner()
DAMAGED = SetRef.snapshot(ts(S1), "10.0.0.2")
MISSING_KEY = DAMAGED.file_key(f"{TABLE}/nb-1-big-Data.db")
STRAY_KEY = DAMAGED.prefix + "[red]leftover"


def report(*findings: Finding) -> dict:
    selection = select_sets(CATALOG, ts(S1), ts(S1), DbTarget())
    manifests = [info.manifest for info in CATALOG.fulls[0].sets.values()]
    return build_report(CATALOG, selection, manifests, findings, [], {"deep": False})


class Flow:
    """Stands in for the flow: records its parameters, returns `returns`."""

    def __init__(self):
        self.calls: list[dict] = []
        self.returns = report()

    def __call__(self, **params) -> dict:
        self.calls.append(params)
        return self.returns


@pytest.fixture()
def flow(monkeypatch):
    import dmf.cli
    import dmf.flows.backup_verify

    stand_in = Flow()
    monkeypatch.setattr(dmf.flows.backup_verify, "backup_verify", stand_in)
    monkeypatch.setattr(dmf.cli, "run_guarded", lambda call: call())
    return stand_in


@pytest.mark.parametrize("args,message", [
    (["--start-time", "20250102000000", "--end-time", "20250101000000"],
     "dmf: error: --start-time 20250102000000 is after --end-time 20250101000000"),
    (["--sample", "1.5"], "dmf: error: invalid --sample '1.5': a fraction of the objects, 0 < F <= 1"),
    (["--db-target", "a;b"], None),
])
def test_bad_options_are_refused_in_one_line_before_any_run(flow, args, message):
    result = runner.invoke(app, ["backup", "verify", *args])
    assert result.exit_code == 2 and flow.calls == []
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("dmf: error: ")
    assert message is None or result.stderr.strip() == message


def test_clean_exits_0_with_the_summary(flow):
    result = runner.invoke(app, ["backup", "verify", "--sample", "0.5", "--seed", "4", "--db-target", "ks"])
    assert result.exit_code == 0, result.output
    assert flow.calls == [{"start_time": None, "end_time": None, "db_target": "ks", "deep": False, "sample": 0.5,
                     "seed": 4, "repository_block": "default"}]
    assert result.stdout.strip() == "2 set(s), 2 object(s) verified: no damage"


def test_damage_is_tabled_with_the_restore_points_it_breaks_and_exits_1(flow):
    flow.returns = report(Finding(DAMAGED, MISSING_KEY, MISSING, "missing"),
                          Finding(DAMAGED, STRAY_KEY, STRAY, "stray: not in the manifest"))
    result = runner.invoke(app, ["backup", "verify", "--deep"])
    assert result.exit_code == 1
    assert MISSING_KEY.removeprefix(DAMAGED.prefix) in result.stdout
    assert "[red]leftover" in result.stdout  # a key is shown as it is, never read as markup
    assert f"{DAMAGED.prefix} breaks restore points from {S1} to 20250101033000 (UTC)" in result.stdout
    assert result.stderr.splitlines() == [
        "dmf: error: 1 damaged object(s) in 1 set(s) (1 missing); 2 set(s), 2 object(s) verified; "
        "1 stray object(s) (warning)"]


def test_json_prints_the_report_and_still_exits_1_on_damage(flow):
    flow.returns = report(Finding(DAMAGED, MISSING_KEY, MISSING, "missing"))
    result = runner.invoke(app, ["backup", "verify", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout) == flow.returns
    assert len(result.stderr.splitlines()) == 1
