"""Backup health: ages against the schedule, recovery point lag, late and failed runs."""
from __future__ import annotations

from datetime import timedelta

from dmf.core.catalog import Catalog
from dmf.core.status import LastCheck, LastRun, Schedule, status, status_markdown
from dmf.status import cron_interval

from .test_lifecycle import HOSTS, T0, batch, full, increment

SCHEDULE = Schedule(increment=timedelta(hours=1), full=timedelta(days=7),
                    flows={"ship-commitlogs": timedelta(minutes=1), "backup-snapshot": timedelta(hours=1)})
FRESH_CHECKS = [LastCheck("backup-verify", T0, "12 set(s), 40 object(s) verified: no damage"),
                LastCheck("restore-drill", T0, "restore drill of ks.t: passed")]


def catalog() -> Catalog:
    return Catalog.build([*full(T0), *increment(T0, T0 + timedelta(hours=1)),
                          *batch(T0, T0 + timedelta(hours=1, minutes=5), host=HOSTS[0])])


def test_a_fresh_history_is_healthy_and_says_how_far_back_it_restores():
    now = T0 + timedelta(hours=1, minutes=30)
    runs = [LastRun("ship-commitlogs", "COMPLETED", now, now - timedelta(seconds=30), "quick-fox")]
    report = status(catalog(), runs, FRESH_CHECKS, now, SCHEDULE)
    assert report["healthy"] and report["problems"] == []
    (target,) = report["targets"]
    assert target["increments"] == 1 and target["last_backup"] == "20260101010000"
    assert target["commitlogs"] == {HOSTS[0]: "20260101010500"}
    assert target["restorable_until"] == "20260101010000"  # not every host has shipped since
    assert target["recovery_point_lag"] == "30.0 min" and report["repository_bytes"] > 0
    assert "healthy" in status_markdown(report)


def test_late_backups_late_shipping_failed_runs_and_damage_are_flagged():
    now = T0 + timedelta(hours=5)
    runs = [LastRun("ship-commitlogs", "COMPLETED", now - timedelta(minutes=10), now - timedelta(minutes=10), "a"),
            LastRun("backup-snapshot", "FAILED", now - timedelta(minutes=1), T0 + timedelta(hours=1), "b"),
            LastRun("backup-cleanup", "COMPLETED", now, now, "c")]  # no schedule: never late
    checks = [LastCheck("backup-verify", now, "1 damaged object(s) in 1 set(s) (1 missing); 3 set(s) ..."),
              LastCheck("restore-drill", None)]
    problems = status(catalog(), runs, checks, now, SCHEDULE)["problems"]
    assert problems == [
        "ks on 10.0.0.1,10.0.0.2: last backup 4.0 h ago (expected every 1.0 h)",
        "backup-snapshot: last run b failed",
        "backup-snapshot: no completed run for 4.0 h (scheduled every 1.0 h)",
        "ship-commitlogs: no completed run for 10.0 min (scheduled every 1.0 min)",
        "backup-verify: 1 damaged object(s) in 1 set(s) (1 missing); 3 set(s) ...",
        "restore-drill: never ran"]
    assert "**ship-commitlogs: no completed run" in status_markdown(status(catalog(), runs, checks, now, SCHEDULE))


def test_an_old_full_is_flagged_against_full_every():
    now = T0 + timedelta(days=15)
    runs = []
    problems = status(catalog(), runs, FRESH_CHECKS, now, Schedule(increment=timedelta(days=30),
                                                                    full=timedelta(days=7)))["problems"]
    assert problems[0].endswith("full 15.0 d old (a new one every 7.0 d)")


def test_cron_schedules_are_read_as_intervals():
    assert cron_interval("0 * * * *") == timedelta(hours=1)
    assert cron_interval("*/5 * * * *") == timedelta(minutes=5)
    assert cron_interval("30 2 * * *") == timedelta(days=1)
    assert cron_interval("0 4 * * 0") == timedelta(days=7)


def test_the_declared_alerts_are_valid_prefect_automations():
    import uuid
    from pathlib import Path

    import yaml
    from prefect.events.schemas.automations import AutomationCore

    text = (Path(__file__).parents[2] / "deployments" / "automations.yaml").read_text()
    declared = yaml.safe_load(text.replace("NOTIFICATION_BLOCK_ID", str(uuid.uuid4())))["automations"]
    automations = [AutomationCore.model_validate(a) for a in declared]
    assert [a.trigger.posture.value for a in automations] == ["Reactive", "Proactive", "Proactive", "Reactive"]
    assert automations[3].trigger.expect == {"dmf.commitlog.lag-exceeded"}  # dmf.shipper emits it
    assert all(a.actions[0].type == "send-notification" for a in automations)
    assert automations[1].trigger.within.total_seconds() == 300


def test_a_node_that_archives_nothing_is_named_by_status():
    """Shipping fails a host whose commitlog_archiving.properties lost its archive_command (it would
    otherwise ship nothing, silently, for ever); status names the host and why."""
    now = T0 + timedelta(hours=1, minutes=30)
    message = ("Flow run encountered an exception: ShippingFailed: commit-log shipping failed on 1 host(s): "
               "10.0.0.2: /etc/cassandra/commitlog_archiving.properties: it has no archive_command: Cassandra "
               "archives no commit-log segment, so none can be shipped (restore it from the registry backup)")
    runs = [LastRun("ship-commitlogs", "FAILED", now, now - timedelta(seconds=30), "d", message)]
    problems = status(catalog(), runs, FRESH_CHECKS, now, SCHEDULE)["problems"]
    assert problems == ["ship-commitlogs: last run d failed: ShippingFailed: commit-log shipping failed on 1 "
                        "host(s): 10.0.0.2: /etc/cassandra/commitlog_archiving.properties: it has no "
                        "archive_command: Cassandra archives no commit-log segment, so none can be shipped "
                        "(restore it from the registry backup)"]
