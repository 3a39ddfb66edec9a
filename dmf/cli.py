"""The `dmf` command line: parses and validates, then runs the matching Prefect flow.

Bad input is rejected here, before anything starts: one line on stderr, exit status 2.
A failed run prints one line and exits 1. Times are YYYYmmddHHMMSS, UTC.
"""
from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from dmf.blocks import DEFAULT_BLOCK
from dmf.core.errors import DmfError, InputError
from dmf.core.targets import DbTarget, parse_hosts
from dmf.core.timestamps import parse_ts

app = typer.Typer(name="dmf", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Backup and disaster recovery for Apache Cassandra, to S3, orchestrated by Prefect. "
                       "All times are YYYYmmddHHMMSS in UTC.")
backup_app = typer.Typer(no_args_is_help=True, help="Take, ship and list backups.")
restore_app = typer.Typer(no_args_is_help=True, help="Restore from backups.")
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")

ClusterBlock = Annotated[str, typer.Option("--cluster-block", help="Name of the dmf-cassandra-cluster block.")]
RepositoryBlock = Annotated[str, typer.Option("--repository-block", help="Name of the dmf-s3-repository block.")]
Async = Annotated[bool, typer.Option("-a", "--async", help="Do not wait: queue a run of the matching Prefect "
                                     "deployment, print how to follow it, and exit.")]


def fail(message: str, code: int) -> None:
    typer.echo(f"dmf: error: {message}", err=True)
    raise typer.Exit(code)


def quiet_console_tracebacks() -> None:
    """The terminal gets Prefect's log lines without tracebacks (one readable line per failure).
    Only the console's formatter class changes: the flow run's logs in the Prefect API are
    formatted by their own handler and keep the traceback."""
    from prefect.logging.formatters import PrefectFormatter
    original = PrefectFormatter.format

    def without_traceback(self, record):
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return original(self, record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
    PrefectFormatter.format = without_traceback


def run_guarded(call):
    """Runs a flow; maps the product's errors to one readable line and an exit status."""
    quiet_console_tracebacks()
    from dmf.reporting import console_progress
    try:
        with console_progress():
            return call()
    except InputError as exc:
        fail(str(exc), 2)
    except DmfError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted; nothing of the unfinished sets is marked complete", 130)
    except Exception as exc:  # noqa: BLE001 — an operator gets one line; the flow run keeps the traceback
        fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unexpected failure'} "
             "(the Prefect flow run's logs have the details)", 1)


def queue_and_exit(command: str, params: dict) -> None:
    from dmf.queueing import queue
    typer.echo(run_guarded(lambda: queue(command, params)).describe())


def print_summary(summary: dict) -> None:
    mib = summary["bytes"] / 2**20
    typer.echo(f"{summary['kind']} backup {summary['set_ts']} (snapshot {summary['snapshot_ts']}): "
               f"{len(summary['hosts'])} host(s), {summary['files']} files, {mib:.1f} MiB in "
               f"{summary['seconds']:.1f}s (transfer {summary['transfer_seconds']:.1f}s, {summary['mb_per_s']:.1f} MB/s)")


@backup_app.command("snapshot")
def backup_snapshot_cmd(
    hosts: Annotated[str, typer.Argument(metavar="HOSTS", help="Comma-separated host names or IP addresses.")],
    backup_schema: Annotated[bool, typer.Option("--backup-schema", help="Also store the target's schema "
                                                "(CQL, table IDs kept).")] = False,
    new: Annotated[bool, typer.Option("--new", help="Force a new full snapshot.")] = False,
    db_target: Annotated[Optional[str], typer.Option("--db-target", metavar="keyspace[.table]",
                                                     help="Scope; default: every non-system keyspace.")] = None,
    run_async: Async = False,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Snapshot HOSTS and upload to S3: incremental when a full snapshot of the same target and
    hosts exists (unless --new), full otherwise."""
    try:
        host_list = parse_hosts(hosts)
        target = DbTarget.parse(db_target)
    except InputError as exc:
        fail(str(exc), 2)
    params = dict(hosts=",".join(host_list), db_target=str(target) or None, new=new,
                  backup_schema=backup_schema, cluster_block=cluster_block, repository_block=repository_block)
    if run_async:
        return queue_and_exit("backup-snapshot", params)
    from dmf.flows.backup_snapshot import backup_snapshot
    summary = run_guarded(lambda: backup_snapshot(**params))
    print_summary(summary)


@backup_app.command("commitlogs")
def backup_commitlogs_cmd(
    hosts: Annotated[Optional[str], typer.Argument(metavar="[HOSTS]", help="Comma-separated hosts; default: "
                                                   "every host of the cluster block.")] = None,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Ship the archived commit-log segments of HOSTS now (the schedule does it every minute)."""
    try:
        host_list = parse_hosts(hosts) if hosts else None
    except InputError as exc:
        fail(str(exc), 2)
    from dmf.flows.ship_commitlogs import ship_commitlogs
    results = run_guarded(lambda: ship_commitlogs(hosts=",".join(host_list) if host_list else None,
                                                  cluster_block=cluster_block, repository_block=repository_block))
    for r in results:
        typer.echo(f"{r['host']} ({r['host_id']}): {r['segments']} segment(s), {human_bytes(r['bytes'])}"
                   + (f" -> {r['prefix']}" if r.get("prefix") else ""))


@backup_app.command("registry")
def backup_registry_cmd(
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Back up dmf's own blocks (secrets masked) and every node's configuration files."""
    from dmf.flows.backup_registry import backup_registry
    result = run_guarded(lambda: backup_registry(cluster_block=cluster_block, repository_block=repository_block))
    typer.echo(f"registry: {result['objects']} object(s) under {result['prefix']}")


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@backup_app.command("list")
def backup_list_cmd(
    start_time: Annotated[Optional[str], typer.Option("--start-time", metavar="YYYYmmddHHMMSS",
                                                      help="Window start, UTC (default: the beginning).")] = None,
    end_time: Annotated[Optional[str], typer.Option("--end-time", metavar="YYYYmmddHHMMSS",
                                                    help="Window end, UTC (default: now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    run_async: Async = False,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """List full snapshots, incremental snapshots and commit-log archives in the window."""
    try:
        for value, name in ((start_time, "--start-time"), (end_time, "--end-time")):
            if value is not None:
                parse_ts(value, name=name)
    except InputError as exc:
        fail(str(exc), 2)
    params = dict(start_time=start_time, end_time=end_time, repository_block=repository_block)
    if run_async:
        return queue_and_exit("backup-list", params)
    from dmf.flows.backup_list import backup_list
    rows = run_guarded(lambda: backup_list(**params))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("time (UTC)", "kind", "snapshot", "hosts", "db-target", "files", "size", "complete")
    for r in rows:
        table.add_row(r["time"], r["kind"], r["snapshot_ts"], ",".join(r["hosts"]), r["db_target"] or "(all)",
                      str(r["files"]), human_bytes(r["bytes"]), "yes" if r["complete"] else "[red]NO[/red]")
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    typer.echo(f"{len(rows)} set(s); {sum(1 for r in rows if not r['complete'])} incomplete")


@restore_app.command("snapshot")
def restore_snapshot_cmd(
    hosts: Annotated[str, typer.Argument(metavar="HOSTS", help="Comma-separated hosts to restore into.")],
    path: Annotated[str, typer.Argument(metavar="PATH", help="Local directory for the files fetched from S3.")],
    db_target: Annotated[str, typer.Argument(metavar="DB_TARGET", help="keyspace or keyspace.table.")],
    schema: Annotated[bool, typer.Option("--schema", help="Recreate the keyspace/table first (table IDs kept).")] = False,
    time: Annotated[Optional[str], typer.Option("--time", metavar="YYYYmmddHHMMSS",
                                                help="Restore the state at this time, UTC (default: now).")] = None,
    get_commitlogs: Annotated[bool, typer.Option("--get-commitlogs", help="Also fetch the commit logs up to "
                                                 "--time into PATH/cassandra_commitlogs/<host_id>/.")] = False,
    replay_commitlogs: Annotated[bool, typer.Option("--replay-commitlogs", help="Also replay the commit logs up "
                                                    "to --time on each host (rolling restart; implies "
                                                    "--get-commitlogs).")] = False,
    mode: Annotated[str, typer.Option("--mode", help="sstableloader (any topology) or import (nodetool import "
                                      "on the same hosts).")] = "sstableloader",
    run_async: Async = False,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Restore DB_TARGET into HOSTS: the full snapshot and every increment up to --time."""
    try:
        host_list = parse_hosts(hosts)
        target = DbTarget.parse(db_target)
        if target.keyspace is None:
            raise InputError("DB_TARGET is required: keyspace or keyspace.table")
        if time is not None:
            parse_ts(time, name="--time")
        if mode not in ("sstableloader", "import"):
            raise InputError(f"invalid --mode {mode!r}: sstableloader or import")
    except InputError as exc:
        fail(str(exc), 2)
    params = dict(hosts=",".join(host_list), path=path, db_target=str(target), restore_schema=schema, time=time,
                  get_commitlogs=get_commitlogs, replay_commitlogs=replay_commitlogs, mode=mode,
                  cluster_block=cluster_block, repository_block=repository_block)
    if run_async:
        return queue_and_exit("restore-snapshot", params)
    from dmf.flows.restore_snapshot import restore_snapshot
    summary = run_guarded(lambda: restore_snapshot(**params))
    typer.echo(f"restored {summary['db_target']} as of {summary['time']} (snapshot {summary['snapshot_ts']}, "
               f"{len(summary['increments'])} increment(s)) into {','.join(summary['hosts'])}: "
               f"{summary['files']} files, {human_bytes(summary['bytes'])}, {len(summary['loaded'])} table sets "
               f"loaded in {summary['seconds']:.1f}s")
    if summary["commitlog_dir"]:
        typer.echo(f"{summary['commitlog_segments']} commit-log segment(s) in {summary['commitlog_dir']}")
    for host, count in summary["replayed_mutations"].items():
        typer.echo(f"{host}: {count} mutation(s) replayed up to {summary['time']}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
