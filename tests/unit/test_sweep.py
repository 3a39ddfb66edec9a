"""What a sweep may remove of a crashed run's leftovers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dmf.core.catalog import CLOCK_SKEW_ALLOWANCE
from dmf.core.sweep import key_time, leftover_snapshot_tags, snapshot_tag, stale_uploads
from dmf.core.timestamps import parse_ts

NOW = parse_ts("20260102000000")
DATA = f"ks/t-{'0' * 32}/nb-1-big-Data.db"


def test_only_dmf_snapshot_tags_but_the_running_one():
    dirs = ["/d/ks/t-1/snapshots/dmf-20260101000000", "/d/ks/u-2/snapshots/dmf-20260101000000/",
            "/d/ks/t-1/snapshots/dmf-20260101120000", "/d/ks/t-1/snapshots/before-upgrade",
            "/d/ks/t-1/snapshots/dmf-2026", "/d/ks/t-1/snapshots/dmf-20260101000000x"]
    assert leftover_snapshot_tags(dirs) == ["dmf-20260101000000", "dmf-20260101120000"]
    assert leftover_snapshot_tags(dirs, keep="dmf-20260101120000") == ["dmf-20260101000000"]
    assert snapshot_tag(NOW) == "dmf-20260102000000"


def test_upload_age_comes_from_the_key_not_from_what_the_store_reports():
    old_set = f"20260101000000/10.0.0.1/backups/20260101010000/{DATA}"
    running = f"20260101000000/10.0.0.1/backups/20260101235900/{DATA}"
    registry = "registry/20251231000000/nodes/10.0.0.1/cassandra.yaml"
    uploads = [(k, f"id-{i}", NOW) for i, k in enumerate([old_set, running, registry, "someone-elses/file",
                                                           "leases/x/y.json"])]
    # Initiated = NOW for all (as s3proxy reports it): only the key's time decides.
    assert stale_uploads(uploads, NOW, timedelta(hours=1)) == [(old_set, "id-0"), (registry, "id-2")]
    assert stale_uploads(uploads, NOW, timedelta(0)) == [(old_set, "id-0"), (running, "id-1"), (registry, "id-2")]
    assert key_time(old_set) == parse_ts("20260101010000") and key_time("someone-elses/file") is None


def test_a_store_that_cannot_list_open_uploads_costs_one_attempt_and_a_warning(monkeypatch):
    from prefect.logging import disable_run_logger

    from dmf import sweep
    from dmf.blocks import S3Repository
    from dmf.storage import StorageError
    from dmf.tasks.sweep import abort_stale_uploads

    calls = []

    def refuse(*args):
        calls.append(args)
        raise StorageError("S3 list multipart uploads s3://b/ failed: 500: Internal Server Error")
    monkeypatch.setattr(sweep, "abort_stale_uploads", refuse)
    assert abort_stale_uploads.retries == 0
    with disable_run_logger():
        assert abort_stale_uploads.fn(S3Repository(bucket="b"), datetime.now(timezone.utc), 60) is None
    assert len(calls) == 1


def test_a_grace_below_the_floor_is_refused_in_one_line():
    from dmf.core.errors import InputError
    from dmf.core.sweep import MIN_GRACE, check_grace

    floor = int(MIN_GRACE.total_seconds() // 60)
    assert check_grace(floor) == MIN_GRACE
    with pytest.raises(InputError, match=f"^--grace-minutes 0 is below the floor of {floor}: "):
        check_grace(0)
    with pytest.raises(InputError, match=f"^incomplete_grace_minutes {floor - 1} is below"):
        check_grace(floor - 1, "incomplete_grace_minutes")


@pytest.mark.parametrize("argv", [["backup", "cleanup", "--grace-minutes", "0"],
                                  ["backup", "purge", "--keep-fulls", "2", "--grace-minutes", "119"]])
def test_the_cli_refuses_a_grace_below_the_floor_before_any_flow(argv, monkeypatch):
    from typer.testing import CliRunner

    import dmf.cli

    monkeypatch.setattr(dmf.cli, "run_guarded", lambda fn: pytest.fail("a flow started"))
    result = CliRunner().invoke(dmf.cli.app, argv)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and "is below the floor of 120" in result.stderr


@pytest.mark.parametrize("skew", [-CLOCK_SKEW_ALLOWANCE, timedelta(0), CLOCK_SKEW_ALLOWANCE])
def test_a_batch_a_sweep_may_pick_is_past_its_seal_deadline_by_a_margin(skew):
    """A sweep removes sets that began before its `now - grace` (grace >= MIN_GRACE); a shipping run
    seals only before `seal_deadline` by its own clock, which may be `skew` off the sweep's. The
    latest batch such a sweep can pick must be past its deadline, with time left for the manifest PUT."""
    from dmf.core.sweep import MIN_GRACE, seal_deadline

    sweep_now = NOW
    latest_picked = sweep_now - MIN_GRACE          # began just before the sweep's cut-off
    deadline_on_sweep_clock = seal_deadline(latest_picked) - skew
    assert sweep_now - deadline_on_sweep_clock >= timedelta(minutes=10)
