"""What a command costs before it does any work, and a tiny backup's fixed cost, in one run on the test
bed: `dmf --help`, `dmf backup list` (an empty bucket, and 35,000 sets whose newest chain holds
8,639), `dmf backup status`, a full and an incremental of a tiny table on three hosts, a full on one
host and a commit-log shipping run, each the median of --runs wall-clock runs of the `dmf` command in
a child process. Beside them: the same commands of the checkout given with --before (its own .venv,
e.g. the main branch: before and after a change in one run, rounds interleaved so that the bed's load
hits both alike), and where comparable cassandra-medusa's `list-backups` and `backup-node` of the
tiny table on node 1.

    .venv/bin/python bench/fixed_costs.py [--runs 3] [--before /work/main] [--no-medusa] [--seed-only]

The buckets are the bench's own: `dmf-bench-empty` (block `bench-empty`), `dmf-bench-list-35000-month`
(block `bench-list-long`, seeded once by bench/list.py's seeding: a full of three hosts every 30 days,
an increment per host every 15 minutes) and `dmf-bench-fixed` (block `bench-fixed`, the tiny backups
of `bench.tiny`). The shipping run ships whatever the nodes archived: ~1.5 MiB is written to the tiny
table before each, so that every node closes a segment.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup_profile import BLOCK as FIXED_BLOCK, KEYSPACE, TINY, fixed_block, tiny_table  # noqa: E402
from common import bed, table  # noqa: E402
from list import BUCKET as LIST_BUCKET, SEEDED, http_put, seed  # noqa: E402

from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from dmf.storage import Storage  # noqa: E402
from dmf.testbed import prefect_server  # noqa: E402
from dmf.testbed.blocks import repository  # noqa: E402
from dmf.testbed.layout import Testbed  # noqa: E402

EMPTY_BLOCK, EMPTY_BUCKET = "bench-empty", "dmf-bench-empty"
LONG_BLOCK, LONG_SETS, CHAIN_SLOTS = "bench-list-long", 35000, 30 * 24 * 4  # a 30-day chain of 15-minute slots
LONG_BUCKET = f"{LIST_BUCKET}-{LONG_SETS}-month"
DMF = str(Path(sys.executable).parent / "dmf")
HOSTS = "127.0.0.1,127.0.0.2,127.0.0.3"
SUMMARY = re.compile(r" in ([0-9.]+)s \(transfer ([0-9.]+)s")


def saved(block, name: str, api_url: str) -> Storage:
    storage = Storage(block)
    if block.bucket not in {b["Name"] for b in storage.s3.list_buckets()["Buckets"]}:
        storage.s3.create_bucket(Bucket=block.bucket)
    with temporary_settings({PREFECT_API_URL: api_url}):
        block.save(name, overwrite=True)
    return storage


def long_chain_block(tb: Testbed, api_url: str) -> None:
    """35,000 sets, the newest chain a whole 30 days (8,639 sets), seeded once (a marker says so)."""
    storage = saved(repository(tb).model_copy(update={"bucket": LONG_BUCKET}), LONG_BLOCK, api_url)
    if storage.get_bytes(SEEDED, missing_ok=True) != str(LONG_SETS).encode():
        slots = -(-LONG_SETS // 3)
        started = time.monotonic()
        seed(http_put(storage), 0, LONG_SETS, chain_slots=CHAIN_SLOTS,
             shift=(CHAIN_SLOTS - (slots - CHAIN_SLOTS) % CHAIN_SLOTS) % CHAIN_SLOTS)
        storage.put_bytes(SEEDED, str(LONG_SETS).encode())
        print(f"{LONG_BUCKET}: seeded in {time.monotonic() - started:.0f}s", file=sys.stderr)


def timed_run(command: list[str], env: dict) -> tuple[float, str, int]:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    return time.monotonic() - started, done.stdout, done.returncode


class Case:
    """One row: a command run by each variant (dmf after, dmf before, Medusa), times kept per variant."""

    def __init__(self, name: str, argv: list[str] | None, medusa=None, before_each=None):
        self.name, self.argv, self.medusa, self.before_each = name, argv, medusa, before_each
        self.times: dict[str, list[float]] = {}
        self.beyond: dict[str, list[float]] = {}  # a backup flow's own seconds beyond its transfer
        self.wall_beyond: dict[str, list[float]] = {}  # the command's wall clock beyond the transfer
        self.codes: dict[str, int] = {}

    def run(self, variant: str, command: list[str] | None, env: dict) -> None:
        if command is None:
            return
        if self.before_each:
            self.before_each()
        seconds, out, code = timed_run(command, env)
        self.times.setdefault(variant, []).append(seconds)
        self.codes[variant] = code or self.codes.get(variant, 0)
        if match := SUMMARY.search(out):  # the flow's own seconds, as its summary gives them (no interpreter start)
            self.beyond.setdefault(variant, []).append(float(match.group(1)) - float(match.group(2)))
            self.wall_beyond.setdefault(variant, []).append(seconds - float(match.group(2)))

    def cell(self, variant: str) -> str:
        if variant not in self.times:
            return ""
        text = f"{statistics.median(self.times[variant]):.2f}"
        if variant in self.beyond:
            text += (f" ({statistics.median(self.wall_beyond[variant]):.2f} / "
                     f"{statistics.median(self.beyond[variant]):.2f})")
        return text + ("" if self.codes[variant] == 0 else f" exit {self.codes[variant]}")


def medusa_commands(tb, cluster, repo):
    """Medusa's list-backups and a tiny backup-node (its snapshot of bench.tiny included), as callables."""
    from medusa_node import backup_with_medusa, ensure_venv, remove_medusa_objects, run_medusa, write_config
    ensure_venv(tb)
    ini = write_config(tb, cluster, repo)

    def list_backups() -> None:
        run_medusa(tb, ini, "listing:list_backups", "list-backups")

    def backup_node() -> None:
        backup_with_medusa(tb, ini, f"{KEYSPACE}.{TINY}")
        remove_medusa_objects(repo)  # so that every list-backups lists an empty prefix
    return list_backups, backup_node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", help="a checkout whose .venv's dmf runs the same commands (e.g. /work/main)")
    parser.add_argument("--no-medusa", action="store_true")
    parser.add_argument("--seed-only", action="store_true", help="seed the 35,000-set bucket, then stop")
    args = parser.parse_args()
    tb, cluster, repo = bed()
    api_url = prefect_server.api_url(tb)
    empty = saved(repository(tb).model_copy(update={"bucket": EMPTY_BUCKET}), EMPTY_BLOCK, api_url)
    assert not empty.list_prefixes(""), f"{EMPTY_BUCKET} is not empty"
    long_chain_block(tb, api_url)
    if args.seed_only:
        return
    with temporary_settings({PREFECT_API_URL: api_url}):
        fixed_block(repo)
    tiny_table(cluster)
    env = {**os.environ, "PREFECT_API_URL": api_url}
    rows = 0

    def writes(rows_each: int, size: int):
        def write() -> None:
            nonlocal rows
            tiny_table(cluster, rows=rows_each, first=100_000 + rows, size=size)
            rows += rows_each
        return write

    medusa_list = medusa_backup = None
    if not args.no_medusa:
        medusa_list, medusa_backup = medusa_commands(tb, cluster, repo)
    tiny = ["--db-target", f"{KEYSPACE}.{TINY}", "--repository-block", FIXED_BLOCK]
    cases = [
        Case("dmf --help", ["--help"]),
        Case("dmf backup list --json (empty bucket)", ["backup", "list", "--json", "--repository-block", EMPTY_BLOCK],
             medusa=medusa_list),
        Case(f"dmf backup list --json ({LONG_SETS:,} sets, newest chain 8,639)",
             ["backup", "list", "--json", "--repository-block", LONG_BLOCK]),
        Case("dmf backup status --json (empty bucket)",
             ["backup", "status", "--json", "--repository-block", EMPTY_BLOCK]),
        Case("dmf backup snapshot --new, tiny table, 3 hosts", ["backup", "snapshot", HOSTS, "--new", *tiny]),
        Case("dmf backup snapshot (incremental), tiny table, 3 hosts", ["backup", "snapshot", HOSTS, *tiny],
             before_each=writes(5, 100)),
        Case("dmf backup commitlogs (one-shot shipping run), 3 hosts",
             ["backup", "commitlogs", "--repository-block", FIXED_BLOCK], before_each=writes(150, 10_000)),
        Case("dmf backup snapshot --new, tiny table, 1 host / medusa backup-node (node 1)",
             ["backup", "snapshot", "127.0.0.1", "--new", *tiny], medusa=medusa_backup),
    ]
    variants = [("after", DMF)] + ([("before", str(Path(args.before) / ".venv" / "bin" / "dmf"))] if args.before else [])
    for _ in range(args.runs):  # rounds interleave the variants, so a slow spell hits them alike
        for case in cases:
            for variant, dmf in variants:
                case.run(variant, [dmf, *case.argv], env)
            if case.medusa is not None:
                started = time.monotonic()
                case.medusa()
                case.times.setdefault("medusa", []).append(time.monotonic() - started)
                case.codes["medusa"] = 0
    load = os.getloadavg()[0]
    header = ["command", f"this branch, median of {args.runs} s"]
    if args.before:
        header.append(f"{args.before}, median of {args.runs} s")
    if not args.no_medusa:
        header.append(f"Medusa, median of {args.runs} s")
    print(table([[c.name, c.cell("after"), *([c.cell("before")] if args.before else []),
                  *([] if args.no_medusa else [c.cell("medusa")])] for c in cases], header))
    print("Wall clock of the command; (a / b): beyond the backup's transfer, a: the command's wall clock, "
          "b: the backup flow's own seconds (its summary; no interpreter start or imports). "
          f"Load average at the end: {load:.1f} on {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
