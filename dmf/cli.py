"""The `dmf` command line: parses and validates, then runs the matching Prefect flow.

Bad input is rejected here, before anything starts: one line on stderr, exit status 2.
A failed run prints one line and exits 1. Times are YYYYmmddHHMMSS, UTC.
"""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from dmf.blocks import DEFAULT_BLOCK
from dmf.core.errors import DmfError, InputError
from dmf.core.targets import DbTarget, parse_hosts

app = typer.Typer(name="dmf", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Backup and disaster recovery for Apache Cassandra, to S3, orchestrated by Prefect. "
                       "All times are YYYYmmddHHMMSS in UTC.")
backup_app = typer.Typer(no_args_is_help=True, help="Take, ship and list backups.")
app.add_typer(backup_app, name="backup")

ClusterBlock = Annotated[str, typer.Option("--cluster-block", help="Name of the dmf-cassandra-cluster block.")]
RepositoryBlock = Annotated[str, typer.Option("--repository-block", help="Name of the dmf-s3-repository block.")]


def fail(message: str, code: int) -> None:
    typer.echo(f"dmf: error: {message}", err=True)
    raise typer.Exit(code)


def run_guarded(call):
    """Runs a flow; maps the product's errors to one readable line and an exit status."""
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


def print_summary(summary: dict) -> None:
    mib = summary["bytes"] / 2**20
    typer.echo(f"{summary['kind']} backup {summary['set_ts']} (snapshot {summary['snapshot_ts']}): "
               f"{len(summary['hosts'])} host(s), {summary['files']} files, {mib:.1f} MiB in "
               f"{summary['seconds']:.1f}s ({summary['mb_per_s']:.1f} MB/s)")


@backup_app.command("snapshot")
def backup_snapshot_cmd(
    hosts: Annotated[str, typer.Argument(help="Comma-separated host names or IP addresses.")],
    backup_schema: Annotated[bool, typer.Option("--backup-schema", help="Also store the target's schema "
                                                "(CQL, table IDs kept).")] = False,
    new: Annotated[bool, typer.Option("--new", help="Force a new full snapshot.")] = False,
    db_target: Annotated[Optional[str], typer.Option("--db-target", metavar="keyspace[.table]",
                                                     help="Scope; default: every non-system keyspace.")] = None,
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
    from dmf.flows.backup_snapshot import backup_snapshot
    summary = run_guarded(lambda: backup_snapshot(**params))
    print_summary(summary)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
