"""restore-drill: prove that the latest backup of a table restores, without touching the table
    restore-snapshot (--into <table>_drill_<ts>, every host of the cluster) → compare-copy (row count;
    a sample compared with the live rows unchanged since the backup) → drop-copy (and its auto_snapshot)
    → report (RTO, backup used, result) published as the `restore-drill` artifact."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster
from dmf.core.drill import scratch_name, verdict
from dmf.core.errors import DmfError, InputError
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_ts, utcnow
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.tasks.drill import compare_copy, drop_copy

DEFAULT_DRILL_PATH = "/var/tmp/dmf-drill"


class DrillFailed(DmfError):
    pass


def report_markdown(report: dict) -> str:
    lines = [f"# Restore drill of {report['db_target']}: {'PASSED' if report['passed'] else 'FAILED'}", "",
             "| | |", "|---|---|"]
    for label, key in [("backup used", "backup"), ("restored into", "copy"), ("RTO (restore, s)", "rto_seconds"),
                       ("drill (s)", "seconds"), ("rows in the copy", "copy_rows"), ("sampled", "sampled"),
                       ("equal to live", "matched"), ("changed since the backup", "changed"),
                       ("differing", "mismatched"), ("why", "why")]:
        lines.append(f"| {label} | {report[key]} |")
    return "\n".join(lines)


@flow(name="restore-drill")
def restore_drill(db_target: str, path: str = DEFAULT_DRILL_PATH, sample_rows: int = 1000,
                  cluster_block: str = DEFAULT_BLOCK, repository_block: str = DEFAULT_BLOCK) -> dict:
    """Restore the latest backup of the table DB_TARGET into a scratch table beside it
    (`<table>_drill_<ts>`), count its rows, compare up to `sample_rows` of them with the live table
    (where unchanged since the backup), measure the RTO, drop the scratch table (and the snapshot
    auto_snapshot takes of it), and publish the `restore-drill` artifact. PATH (absolute) holds the
    download while the drill runs. Fails (after cleaning up) when the copy is wrong."""
    target = DbTarget.parse(db_target)
    if target.table is None:
        raise InputError("a drill restores one table: give DB_TARGET as keyspace.table")
    logger = get_run_logger()
    started = time.monotonic()
    now = utcnow()
    copy = DbTarget(target.keyspace, scratch_name(target.table, now))
    cluster = CassandraCluster.load(cluster_block)
    workdir = Path(path) / format_ts(now)
    try:
        restored = restore_snapshot(hosts=[h.address for h in cluster.hosts], path=str(workdir), db_target=str(target),
                                    into=str(copy), time=format_ts(now), cluster_block=cluster_block,
                                    repository_block=repository_block)
        last_set = parse_ts(restored["increments"][-1] if restored["increments"] else restored["snapshot_ts"])
        rows, check = compare_copy(cluster, target, copy, int(last_set.timestamp() * 1_000_000), sample_rows)
    finally:
        drop_copy(cluster, copy)
        shutil.rmtree(workdir, ignore_errors=True)
    passed, why = verdict(rows, restored["files"], check)
    report = {"db_target": str(target), "time": format_ts(now), "passed": passed, "why": why or "—",
              "backup": f"full {restored['snapshot_ts']} + {len(restored['increments'])} increment(s), state of "
                        f"{format_ts(last_set)}",
              "copy": str(copy), "rto_seconds": restored["seconds"], "seconds": round(time.monotonic() - started, 2),
              "files": restored["files"], "bytes": restored["bytes"], "copy_rows": rows, "sampled": check.sampled,
              "matched": check.matched, "changed": check.changed, "mismatched": len(check.mismatched)}
    create_markdown_artifact(key="restore-drill", markdown=report_markdown(report),
                             description=f"restore drill of {target}: {'passed' if passed else 'FAILED'}")
    (logger.info if passed else logger.error)("restore drill of %s %s: RTO %.1fs, %d rows, %d/%d sampled rows "
                                              "equal%s", target, "passed" if passed else "FAILED",
                                              report["rto_seconds"], rows, check.matched, check.sampled,
                                              f" ({why})" if why else "")
    if not passed:
        raise DrillFailed(f"restore drill of {target} failed: {why}")
    return report
