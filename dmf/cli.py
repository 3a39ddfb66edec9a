"""The `dmf` command line: parses and validates, then runs the matching Prefect flow.

Bad input is rejected here, before anything starts: one line on stderr, exit status 2.
A failed run prints one line and exits 1. Times are YYYYmmddHHMMSS, UTC.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Optional

import typer

from dmf.core.catalog import parse_kind
from dmf.core.defaults import DEFAULT_BLOCK
from dmf.core.errors import DmfError, InputError
from dmf.core.targets import DbTarget, parse_hosts
from dmf.core.timestamps import parse_window
from dmf.core.limits import check_limit

app = typer.Typer(name="dmf", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Backup and disaster recovery for Apache Cassandra, to S3, orchestrated by Prefect. "
                       "All times are YYYYmmddHHMMSS in UTC.")
backup_app = typer.Typer(no_args_is_help=True, help="Take, ship and list backups.")
restore_app = typer.Typer(no_args_is_help=True, help="Restore from backups.")
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")
key_app = typer.Typer(no_args_is_help=True, help="Keys for client-side encryption.")
app.add_typer(key_app, name="key")
VERBOSE = False


@app.callback()
def options(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Also print the run's log lines "
                                                  "on stderr (the flow run in the Prefect UI has them "
                                                  "either way).")] = False) -> None:
    global VERBOSE
    VERBOSE = verbose


@key_app.command("generate")
def key_generate() -> None:
    """Print a new random key for the repository block's encryption_key (encryption: client).
    Store it where the backups are not (a secrets manager): without it they cannot be restored."""
    from dmf.encryption import generate_key
    typer.echo(generate_key())


ClusterBlock = Annotated[str, typer.Option("--cluster-block", help="Name of the dmf-cassandra-cluster block.")]
RepositoryBlock = Annotated[str, typer.Option("--repository-block", help="Name of the dmf-s3-repository block.")]
StartTime = Annotated[Optional[str], typer.Option("--start-time", metavar="YYYYmmddHHMMSS",
                                                  help="Window start, UTC (default: the beginning).")]
EndTime = Annotated[Optional[str], typer.Option("--end-time", metavar="YYYYmmddHHMMSS",
                                                help="Window end, UTC (default: now).")]
# Checked in the command (check_limit) rather than by click's range, for one line on a bad value.
MaxUpload = Annotated[Optional[float], typer.Option("--max-upload-mib-s", metavar="MIB_S", help="Upload limit "
                                                    "per host for this run, in MiB/s (default: the repository "
                                                    "block's max_upload_mib_s; none if unset).")]
Async = Annotated[bool, typer.Option("-a", "--async", help="Do not wait: queue a run of the matching Prefect "
                                     "deployment, print how to follow it, and exit.")]


def fail(message: str, code: int) -> None:
    typer.echo(f"dmf: error: {message}", err=True)
    raise typer.Exit(code)


def check_grace_option(minutes: int) -> None:
    from dmf.core.sweep import check_grace
    try:
        check_grace(minutes)
    except InputError as exc:
        fail(str(exc), 2)


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


# Whose warnings reach the terminal without -v: a flow's or task's run logger, and dmf's modules.
OPERATOR_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "dmf.")


def console_warnings_only() -> None:
    """Without -v the terminal shows the run's warnings and nothing else of its log: its INFO lines and
    the engine's ERROR lines about a failure belong to the run in the UI, where the API handler still
    sends every line; dmf prints its own one-line error. Only the run's and dmf's own warnings: not
    those of Prefect's background services (its events worker warns when a failed run exits with an
    event still queued) or of the libraries. Patched on the class, as the formatter is above: Prefect
    makes its console handler only when the first run starts."""
    from prefect.logging.handlers import PrefectConsoleHandler
    emit = PrefectConsoleHandler.emit

    def warnings_only(self, record):
        if record.levelno == logging.WARNING and record.name.startswith(OPERATOR_LOGGERS):
            emit(self, record)
    PrefectConsoleHandler.emit = warnings_only


def run_guarded(call):
    """Runs a flow; maps the product's errors to one readable line and an exit status."""
    quiet_console_tracebacks()
    if not VERBOSE:
        console_warnings_only()
    from dmf.flow_runs import in_process_flow_runs
    from dmf.reporting import console_progress
    with console_progress(), in_process_flow_runs():
        return run_direct(call)


def direct_api():
    """The Prefect API to read a block from without importing Prefect, or None: then the command runs its
    flow (dmf.prefect_api says when)."""
    from dmf.prefect_api import api
    return api()


def run_direct(call):
    """Runs a read-only command's answer in this process, or a flow; one readable line per failure."""
    try:
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
    if summary.get("why_full"):
        typer.echo(f"full because {summary['why_full']}")


@backup_app.command("snapshot")
def backup_snapshot_cmd(
    hosts: Annotated[str, typer.Argument(metavar="HOSTS", help="Comma-separated host names or IP addresses.")],
    backup_schema: Annotated[bool, typer.Option("--backup-schema", help="Also store the target's schema "
                                                "(CQL, table IDs kept).")] = False,
    new: Annotated[bool, typer.Option("--new", help="Force a new full snapshot.")] = False,
    db_target: Annotated[Optional[str], typer.Option("--db-target", metavar="keyspace[.table]",
                                                     help="Scope; default: every non-system keyspace.")] = None,
    max_upload_mib_s: MaxUpload = None,
    run_async: Async = False,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Snapshot HOSTS and upload to S3: incremental when a full snapshot of the same target and
    hosts exists (unless --new), full otherwise."""
    try:
        host_list = parse_hosts(hosts)
        target = DbTarget.parse(db_target)
        check_limit(max_upload_mib_s, "--max-upload-mib-s")
    except InputError as exc:
        fail(str(exc), 2)
    params = dict(hosts=",".join(host_list), db_target=str(target) or None, new=new,
                  backup_schema=backup_schema, cluster_block=cluster_block, repository_block=repository_block,
                  max_upload_mib_s=max_upload_mib_s)
    if run_async:
        return queue_and_exit("backup-snapshot", params)
    from dmf.flows.backup_snapshot import backup_snapshot
    summary = run_guarded(lambda: backup_snapshot(**params))
    print_summary(summary)


@backup_app.command("commitlogs")
def backup_commitlogs_cmd(
    hosts: Annotated[Optional[str], typer.Argument(metavar="[HOSTS]", help="Comma-separated hosts; default: "
                                                   "every host of the cluster block.")] = None,
    max_upload_mib_s: MaxUpload = None,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Ship the archived commit-log segments of HOSTS now (the schedule does it every minute)."""
    try:
        host_list = parse_hosts(hosts) if hosts else None
        check_limit(max_upload_mib_s, "--max-upload-mib-s")
    except InputError as exc:
        fail(str(exc), 2)
    from dmf.flows.ship_commitlogs import ship_commitlogs
    results = run_guarded(lambda: ship_commitlogs(hosts=",".join(host_list) if host_list else None,
                                                  cluster_block=cluster_block, repository_block=repository_block,
                                                  max_upload_mib_s=max_upload_mib_s))
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


@backup_app.command("cleanup")
def backup_cleanup_cmd(
    grace_minutes: Annotated[int, typer.Option("--grace-minutes", help="Only open multipart uploads and "
                                               "sets without a manifest older than this are removed "
                                               "(at least 120).")] = 1440,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Remove what crashed runs left: dmf snapshots on every node (while this run holds the
    cluster, none is live), and, past the grace period, open multipart uploads and sets without a
    manifest. Never touches a complete set. Backups do the first two on their own."""
    check_grace_option(grace_minutes)
    from dmf.flows.backup_cleanup import backup_cleanup
    summary = run_guarded(lambda: backup_cleanup(cluster_block=cluster_block, repository_block=repository_block,
                                                 grace_minutes=grace_minutes))
    for host, tags in summary["cleared_snapshots"].items():
        typer.echo(f"{host}: {len(tags)} leftover snapshot(s) cleared" + (f" ({', '.join(tags)})" if tags else ""))
    typer.echo(f"{summary['aborted_uploads']} open multipart upload(s) aborted, "
               f"{summary['removed_objects']} object(s) of sets without a manifest removed")


@backup_app.command("purge")
def backup_purge_cmd(
    keep_fulls: Annotated[Optional[int], typer.Option("--keep-fulls", min=1, metavar="N", help="Keep the newest N "
                                                      "complete fulls of each target and host set, with their "
                                                      "chains (default: the repository block's keep_fulls).")] = None,
    keep_days: Annotated[Optional[float], typer.Option("--keep-days", min=0.001, metavar="D", help="Keep every "
                                                       "restore point of the last D days (default: the repository "
                                                       "block's keep_days).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would go and the bytes freed; delete "
                                          "nothing.")] = False,
    grace_minutes: Annotated[int, typer.Option("--grace-minutes", help="Sets of failed runs and open "
                                               "multipart uploads go once older than this (at least 120).")] = 1440,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report (every set removed).")] = False,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Remove the backups the retention policy no longer needs: never a retained restore point, never a
    target's newest full. Keeps each retained full's whole chain and every commit-log batch shipped
    since the oldest full kept. Manifests go first (fulls' last), so a purge cut off midway never
    leaves anything listed complete that is not; run it again to finish."""
    from dmf.core.lifecycle import RetentionPolicy
    try:
        if keep_fulls is not None or keep_days is not None:
            RetentionPolicy(keep_fulls, keep_days)
    except InputError as exc:
        fail(str(exc), 2)
    check_grace_option(grace_minutes)
    from dmf.flows.backup_purge import backup_purge
    report = run_guarded(lambda: backup_purge(keep_fulls=keep_fulls, keep_days=keep_days, dry_run=dry_run,
                                              grace_minutes=grace_minutes, cluster_block=cluster_block,
                                              repository_block=repository_block))
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    verb = "would remove" if dry_run else "removed"
    removed = report["removed"]
    typer.echo(f"{verb}: {removed['full']} full(s), {removed['incremental']} increment(s), {removed['commitlog']} "
               f"commit-log batch(es), {report['failed_run_sets']} set(s) of failed runs; "
               f"{human_bytes(report['bytes'])} freed")
    typer.echo(f"kept ({report['policy']}):")
    for full in report["retained"]:
        typer.echo(f"  full {full['snapshot_ts']} of {full['db_target'] or '(all)'} on {','.join(full['hosts'])}, "
                   f"{human_bytes(full['bytes'])}, with its increments")
    if report["keep_commitlogs_from"]:
        typer.echo(f"  commit logs shipped since {report['keep_commitlogs_from']}")
    for damage in report["damaged"]:
        typer.echo(f"  not complete, kept as the backup it may have been: {damage}")
    for locked in report.get("locked", []):
        typer.echo(f"  expired but kept, {locked}")


@backup_app.command("copy")
def backup_copy_cmd(
    to: Annotated[Optional[str], typer.Option("--to", metavar="BLOCK", help="Copy to this dmf-s3-repository block "
                                              "only (default: every block of the repository's copy_to).")] = None,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Copy every complete set of the repository that its copies lack (and keep under their own retention),
    oldest first: server-side when both are on one store, streamed otherwise; each object verified by its
    SHA-256, the manifest written last. A copy killed midway lists nothing complete it lacks; run it again."""
    from dmf.flows.backup_copy import backup_copy
    summary = run_guarded(lambda: backup_copy(to=to, repository_block=repository_block, cluster_block=cluster_block))
    for r in summary["copies"]:
        typer.echo(f"{r['copy']}: {len(r['sets'])} set(s), {human_bytes(r['bytes'])} copied ({r['mode']})")


@backup_app.command("verify")
def backup_verify_cmd(
    start_time: StartTime = None,
    end_time: EndTime = None,
    db_target: Annotated[Optional[str], typer.Option("--db-target", metavar="keyspace[.table]",
                                                     help="Only backups holding data of it, as `backup list` "
                                                          "selects them.")] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also re-read every object and check its SHA-256 "
                                       "against the manifest.")] = False,
    sample: Annotated[Optional[float], typer.Option("--sample", metavar="F", help="Re-read only this fraction "
                                                    "of the objects, drawn at random (0 < F <= 1; implies "
                                                    "--deep for them).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Seed of --sample's draw (the "
                                                "report names the one used), to repeat a run.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of a table.")] = False,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Check that every complete set in the window is what its manifest says: each object there with
    its size (from listings), and with --deep or --sample its SHA-256. Objects a manifest does not list
    are reported as strays (a warning). Names the restore points each damaged set breaks. Exit status
    1 when anything is missing, of the wrong size or hash."""
    from dmf.core.verify import check_sample, summary_line
    try:
        parse_window(start_time, end_time)
        check_sample(sample)
        target = DbTarget.parse(db_target)
    except InputError as exc:
        fail(str(exc), 2)
    from dmf.flows.backup_verify import backup_verify
    report = run_guarded(lambda: backup_verify(start_time=start_time, end_time=end_time,
                                               db_target=str(target) or None, deep=deep, sample=sample, seed=seed,
                                               repository_block=repository_block))
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        if report["problems"]:
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text
            table = Table("set", "object", "problem")
            for p in report["problems"]:  # Text: a stray's key is any S3 key, never rich markup
                table.add_row(Text(p["set"]), Text(p["object"].removeprefix(p["set"])),
                              Text(p["detail"], style="red" if p["damage"] else "yellow"))
            Console(width=None if sys.stdout.isatty() else 240).print(table)
        for b in report["breaks"]:
            typer.echo(f"{b['set']} {b['restore_points']}")
        if report["clean"]:
            typer.echo(summary_line(report) + (f" ({human_bytes(report['hashed_bytes'])} re-read)"
                                               if report["deep"] else ""))
    if not report["clean"]:
        fail(summary_line(report), 1)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def loaded_summary(loaded: list[str], shown: int = 3) -> str:
    """What a restore loaded (tables with sstableloader, table sets with import), the first few named."""
    more = f"; and {len(loaded) - shown} more" if len(loaded) > shown else ""
    return "; ".join(loaded[:shown]) + more if loaded else "nothing loaded"


@backup_app.command("status")
def backup_status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Backup health at a glance: per target, the newest full and backup, commit logs per host, the
    restorable window and recovery point lag; each dmf flow's last run; the newest verify and drill;
    repository size and growth. Late or failed items are flagged; exit status 1 if any is."""
    prefect_api = direct_api()
    if prefect_api is None:
        from dmf.flows.backup_status import backup_status
        report = run_guarded(lambda: backup_status(repository_block=repository_block))
    else:
        report = run_direct(lambda: status_directly(prefect_api, repository_block))
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
        console = Console(width=None if sys.stdout.isatty() else 240)
        targets = Table("target", "hosts", "full (age)", "last backup (age)", "restorable until", "RPO lag", "flags")
        for t in report["targets"]:
            targets.add_row(Text(t["db_target"] or "(all)"), ",".join(t["hosts"]), f"{t['full']} ({t['full_age']})",
                            f"{t['last_backup']} ({t['last_backup_age']})", t["restorable_until"],
                            t["recovery_point_lag"], Text("; ".join(t["flags"]) or "ok"))
        console.print(targets)
        if report.get("shippers"):
            shippers = Table("node (shipper)", "recovery point", "RPO lag", "heartbeat", "flags")
            for n in report["shippers"]:
                shippers.add_row(n["host"], n["recovery_point"] or "none yet", n["lag"], n["heartbeat"],
                                 Text("; ".join(n["flags"]) or "ok"))
            console.print(shippers)
        flows = Table("flow", "last run", "last completed", "flags")
        for f in report["flows"]:
            flows.add_row(f["flow"], f"{f['state']} {f['at'] or ''}", f["completed_at"] or "never",
                          Text("; ".join(f["flags"]) or "ok"))
        for c in report["checks"]:
            flows.add_row(c["check"], c["at"] or "never", "", Text("; ".join(c["flags"]) or c["summary"]))
        console.print(flows)
        typer.echo(f"repository {human_bytes(report['repository_bytes'])}, "
                   f"+{human_bytes(report['growth_bytes_7d'])} in 7 days")
        for copy in report.get("copies", []):
            typer.echo(copy["line"])
    if not report["healthy"]:
        fail(f"{len(report['problems'])} problem(s): {'; '.join(report['problems'])}", 1)
    if not as_json:
        typer.echo("healthy")


@backup_app.command("list")
def backup_list_cmd(
    start_time: StartTime = None,
    end_time: EndTime = None,
    db_target: Annotated[Optional[str], typer.Option("--db-target", metavar="keyspace[.table]",
                                                     help="Only backups holding data of it (a keyspace's or "
                                                          "everything's backup holds a table's; commit logs "
                                                          "hold everything).")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", metavar="full|incremental|commitlog",
                                                help="Only this kind of set.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    rescan: Annotated[bool, typer.Option("--rescan", help="Trust no index: read every manifest and write the "
                                                          "catalog indexes and closed chain summaries again "
                                                          "(after objects were changed by hand or by "
                                                          "another tool).")] = False,
    run_async: Async = False,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """List full snapshots, incremental snapshots and commit-log archives in the window. A complete full
    snapshot also shows its chain's size (the full and its complete increments) and its restorable
    window: from the full's time to the latest time a restore from it reaches, its last complete
    increment or, with --replay-commitlogs, the last time every one of its hosts shipped commit logs
    under it, whichever is later."""
    try:
        parse_window(start_time, end_time)
        target = DbTarget.parse(db_target)
        if kind is not None:
            parse_kind(kind)
    except InputError as exc:
        fail(str(exc), 2)
    params = dict(start_time=start_time, end_time=end_time, db_target=str(target) or None, kind=kind,
                  rescan=rescan, repository_block=repository_block)
    if run_async:
        return queue_and_exit("backup-list", params)
    prefect_api = direct_api()
    if prefect_api is None:
        from dmf.flows.backup_list import backup_list
        rows = run_guarded(lambda: backup_list(**params))
    else:
        rows = run_direct(lambda: list_directly(prefect_api, params))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("time (UTC)", "kind", "snapshot", "hosts", "db-target", "files", "size", "complete",
                  "chain size", "restorable window (UTC)")
    for r in rows:
        chained = r["chain_bytes"] is not None
        table.add_row(r["time"], r["kind"], r["snapshot_ts"], ",".join(r["hosts"]), r["db_target"] or "(all)",
                      str(r["files"]), human_bytes(r["bytes"]), "yes" if r["complete"] else "[red]NO[/red]",
                      human_bytes(r["chain_bytes"]) if chained else "",
                      f"{r['restorable_from']} → {r['restorable_until']}" if chained else "")
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    typer.echo(f"{len(rows)} set(s); {sum(1 for r in rows if not r['complete'])} incomplete")


def direct_repository(prefect_api, name: str):
    from dmf.s3_settings import direct_repository
    return direct_repository(prefect_api.block_data("dmf-s3-repository", name), name)


def status_directly(prefect_api, repository_block: str) -> dict:
    """backup status without the engine: what the flow reports (dmf.status.status_report), from the same
    catalog read and the API's facts read over HTTP. Publishes no artifact (the deployment's runs do)."""
    from concurrent.futures import ThreadPoolExecutor

    from dmf.repository import Repository
    from dmf.status import read_facts, read_heartbeats, status_report
    from dmf.storage import Storage
    with ThreadPoolExecutor(1) as pool:  # the API's facts are read while the catalog is
        facts = pool.submit(read_facts, prefect_api.request)
        repository = direct_repository(prefect_api, repository_block)
        catalog = Repository(Storage(repository)).listing_catalog()
        report = status_report(repository.full_every, catalog, facts.result(),
                               heartbeats=read_heartbeats(Storage(repository)))
    from dmf.copy import copy_lags
    report["copies"] = copy_lags(catalog, {name: direct_repository(prefect_api, name) for name in repository.copy_to})
    return report


def list_directly(prefect_api, params: dict) -> list[dict]:
    """backup list without the engine: the block read over the API, the rows from dmf.listing as the flow
    reads them. Not recorded as a flow run (the deployment's runs and `-a` are)."""
    from dmf.listing import list_backups
    rows, problems = list_backups(direct_repository(prefect_api, params.pop("repository_block")), **params)
    if VERBOSE:
        for problem in problems:
            typer.echo(f"listed as incomplete: {problem}", err=True)
    return rows


@restore_app.command("snapshot")
def restore_snapshot_cmd(
    hosts: Annotated[str, typer.Argument(metavar="HOSTS", help="Comma-separated hosts to restore into: live "
                                         "nodes of the cluster's ring.")],
    path: Annotated[str, typer.Argument(metavar="PATH", help="Local directory for what this worker fetches "
                                        "from S3: the worker path's files, the schemas, commit logs "
                                        "(made owner-only if missing; a relative PATH is taken from the current "
                                        "directory, and refused with -a).")],
    db_target: Annotated[str, typer.Argument(metavar="DB_TARGET", help="keyspace or keyspace.table.")],
    schema: Annotated[bool, typer.Option("--schema", help="Recreate the keyspace/table first (table IDs kept).")] = False,
    time: Annotated[Optional[str], typer.Option("--time", metavar="YYYYmmddHHMMSS",
                                                help="Restore the state at this time, UTC (default: now).")] = None,
    get_commitlogs: Annotated[bool, typer.Option("--get-commitlogs", help="Also fetch the commit logs up to "
                                                 "--time into PATH/cassandra_commitlogs/<host_id>/ (always "
                                                 "kept: they are yours to use).")] = False,
    replay_commitlogs: Annotated[bool, typer.Option("--replay-commitlogs", help="Also replay the commit logs up "
                                                    "to --time (implies --get-commitlogs): in a scratch "
                                                    "Cassandra on this worker, then loaded like the backup "
                                                    "(no node restarted; --into and other clusters too).")] = False,
    replay_on: Annotated[str, typer.Option("--replay-on", help="Where --replay-commitlogs replays: scratch "
                                           "(default) or nodes (each node restarted in turn with the replay "
                                           "settings, in place only: for workers that cannot run Java).")] = "scratch",
    scratch_heap_mib: Annotated[Optional[int], typer.Option("--scratch-heap-mib", metavar="MIB", help="Heap of the "
                                                            "scratch Cassandra that --replay-commitlogs starts "
                                                            "(default 512; 256 to 65536): more for commit logs "
                                                            "of wide or many tables, so it flushes less often. "
                                                            "This worker needs it and ~384 MiB more free.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="node (default): each node fetches its own files from S3 "
                                      "and imports them (same tokens; into another topology, or HOSTS without "
                                      "every backup host, each of HOSTS fetches a share and streams it with its "
                                      "own sstableloader); a node that cannot reach S3 or run python, and every "
                                      "node when the key must stay on this worker (encryption: client, SSE-C), "
                                      "takes the worker path, and the run log says why. sstableloader: "
                                      "everything through this worker, downloaded into PATH and streamed from "
                                      "here (any topology). import: downloaded into PATH, placed on the hosts "
                                      "they came from and loaded by nodetool import.")] = "node",
    keep_files: Annotated[bool, typer.Option("--keep-files", help="Keep the downloaded SSTables (in PATH, or on "
                                             "the node path in each node's staging folder) after a successful "
                                             "restore (default: removed; after a failure they always stay, so a "
                                             "rerun resumes). PATH/cassandra_commitlogs/ is always kept.")] = False,
    allow_host_subset: Annotated[bool, typer.Option("--allow-host-subset", help="Restore from a full taken on only "
                                                    "some of this cluster's nodes (refused by default: it holds "
                                                    "only their share of the data).")] = False,
    dc_map: Annotated[Optional[str], typer.Option("--dc-map", metavar="OLD:NEW[,OLD:NEW]", help="With --schema, "
                                                  "create the keyspace with the backup's datacenters renamed "
                                                  "(restoring into a cluster whose datacenters differ).")] = None,
    replication: Annotated[Optional[str], typer.Option("--replication", metavar="CQL_MAP", help="With --schema, "
                                                       "create the keyspace with this replication instead, e.g. "
                                                       "\"{'class': 'NetworkTopologyStrategy', 'dc1': 3}\".")] = None,
    truncate_first: Annotated[bool, typer.Option("--truncate-first", help="Empty the target's tables after the "
                                                 "download is verified, before loading, so the backup's rows "
                                                 "replace the table's (a corrupted table; rows deleted since the "
                                                 "backup come back). Needs --yes.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --truncate-first.")] = False,
    into: Annotated[Optional[str], typer.Option("--into", metavar="KEYSPACE.TABLE", help="Load the table's backup "
                                                "into this table instead (created from the backup's schema if "
                                                "missing, in an existing keyspace): compare or recover rows "
                                                "without touching DB_TARGET.")] = None,
    max_download_mib_s: Annotated[Optional[float], typer.Option("--max-download-mib-s", metavar="MIB_S",
                                                                help="Limit of the download from S3 into PATH, "
                                                                     "in total, and of each node's fetch on the "
                                                                     "node path, in MiB/s (default: the repository "
                                                                     "block's max_download_mib_s; none if "
                                                                     "unset).")] = None,
    run_async: Async = False,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Restore DB_TARGET into HOSTS: the full snapshot and every increment up to --time."""
    import os

    from dmf.core.restore_request import RestoreRequest
    try:
        # The flow run records an absolute PATH; a queued run has no working directory of ours to use.
        request = RestoreRequest.parse(
            hosts, path if run_async else os.path.expanduser(path), db_target, cwd=None if run_async else os.getcwd(),
            time=time, mode=mode, restore_schema=schema, get_commitlogs=get_commitlogs,
            replay_commitlogs=replay_commitlogs, keep_files=keep_files, allow_host_subset=allow_host_subset,
            dc_map=dc_map, replication=replication, truncate_first=truncate_first, yes=yes, into=into,
            max_download_mib_s=max_download_mib_s, replay_on=replay_on, scratch_heap_mib=scratch_heap_mib)
    except InputError as exc:
        fail(str(exc), 2)
    params = dict(request.flow_params(), cluster_block=cluster_block, repository_block=repository_block)
    if run_async:
        return queue_and_exit("restore-snapshot", params)
    from dmf.flows.restore_snapshot import restore_snapshot
    echo_restore(run_guarded(lambda: restore_snapshot(**params)))


def echo_restore(summary: dict) -> None:
    """The restore's summary, a few lines: what was restored, PATH's peak and files, the commit logs."""
    typer.echo(f"restored {summary['db_target']}" + (f" into {summary['into']}" if summary["into"] else "")
               + f" as of {summary['time']} (snapshot {summary['snapshot_ts']}, "
               f"{len(summary['increments'])} increment(s)) on {','.join(summary['hosts'])}: "
               f"{summary['files']} files, {human_bytes(summary['bytes'])}, loaded in {summary['seconds']:.1f}s "
               f"({loaded_summary(summary['loaded'])})")
    typer.echo(f"PATH {summary['path']} needed {human_bytes(summary['path_peak_bytes'])} at peak; downloaded files "
               + ("kept" if summary["kept_files"] else f"removed ({summary['removed_files']})"))
    if summary["commitlog_dir"]:
        typer.echo(f"{summary['commitlog_segments']} commit-log segment(s) in {summary['commitlog_dir']} (kept)")
    scratch = (summary.get("replay") or {}).get("nodes", {})
    if (summary.get("replay") or {}).get("reused_from"):
        typer.echo(f"commit-log replay reused from {summary['replay']['reused_from']}: made for the same segments "
                   "and time by an earlier restore into this PATH")
    for host, count in summary["replayed_mutations"].items():
        segments = f" from {scratch[host]['segments']} segment(s) in a scratch Cassandra" if host in scratch else ""
        typer.echo(f"{host}: {count} mutation(s) replayed up to {summary['time']}{segments}")


@restore_app.command("drill")
def restore_drill_cmd(
    db_target: Annotated[str, typer.Argument(metavar="DB_TARGET", help="The table to rehearse: keyspace.table.")],
    path: Annotated[str, typer.Option("--path", help="Absolute directory for the download while the drill "
                                      "runs (removed after).")] = "/var/tmp/dmf-drill",
    sample_rows: Annotated[int, typer.Option("--sample-rows", min=0, help="Rows of the copy compared with the "
                                             "live table.")] = 1000,
    cluster_block: ClusterBlock = DEFAULT_BLOCK,
    repository_block: RepositoryBlock = DEFAULT_BLOCK,
) -> None:
    """Rehearse a restore: the latest backup of DB_TARGET into a scratch table beside it, checked (row
    count; a sample compared with the live rows unchanged since the backup), timed (RTO), then
    dropped. The live table is never touched. Exit status 1 if the copy is wrong."""
    from dmf.core.restore_checks import absolute_path
    try:
        target = DbTarget.parse(db_target)
        if target.table is None:
            raise InputError("a drill restores one table: give DB_TARGET as keyspace.table")
        path = absolute_path(path, None)
    except InputError as exc:
        fail(str(exc), 2)
    from dmf.flows.restore_drill import restore_drill
    report = run_guarded(lambda: restore_drill(db_target=str(target), path=path, sample_rows=sample_rows,
                                               cluster_block=cluster_block, repository_block=repository_block))
    typer.echo(f"restore drill of {report['db_target']} passed: RTO {report['rto_seconds']:.1f}s "
               f"({report['files']} files, {human_bytes(report['bytes'])}, {report['backup']}); "
               f"{report['copy_rows']} rows in the copy, {report['matched']} of {report['sampled']} sampled equal to "
               f"the live table ({report['changed']} changed since); {report['copy']} dropped")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
