"""Shared pieces of the benchmarks: the test bed's blocks, data loading, child-process runs."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from cassandra.concurrent import execute_concurrent_with_args

from dmf.cql import connect
from dmf.testbed.blocks import cluster, repository
from dmf.testbed.layout import Testbed

ROW_BYTES = 64 * 1024
KEYSPACE, TABLE = "bench", "data"


def bed():
    tb = Testbed.from_env()
    return tb, cluster(tb, tb.nodes(3)), repository(tb)


def nodetool(tb: Testbed, *args: str, node_index: int = 1) -> str:
    node = tb.node(node_index)
    return subprocess.run([str(tb.bin / "nodetool"), "-h", "127.0.0.1", "-p", str(node.jmx_port), *args],
                          check=True, capture_output=True, text=True).stdout


def settle(tb: Testbed, keyspace: str = KEYSPACE, timeout: float = 90) -> None:
    """Flushes `keyspace` on every node and waits until the machine is mostly idle, so a phase is
    not measured while replicas flush or collect garbage after the writes that preceded it."""
    for index in (1, 2, 3):
        nodetool(tb, "flush", keyspace, node_index=index)
    wait_idle(timeout)


def wait_idle(timeout: float = 90) -> None:
    """Until the machine is mostly idle (or `timeout`): a phase is not measured while the previous
    one's JVMs flush or collect garbage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _cpu_times()
        time.sleep(1.0)
        after = _cpu_times()
        busy = 1 - (after[1] - before[1]) / max(after[0] - before[0], 1)
        if busy < 0.35:
            return


def _cpu_times() -> tuple[int, int]:
    """(total, idle) jiffies of the machine, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def ensure_table(block) -> None:
    with connect(block) as session:
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.{TABLE} (id int PRIMARY KEY, payload blob) "
                        "WITH compression = {'enabled': 'false'}")


def write_rows(block, first: int, count: int, table: str = TABLE, keyspace: str = KEYSPACE) -> None:
    """Incompressible 64 KiB rows, so bytes on disk follow bytes written."""
    with connect(block, timeout=120) as session:
        insert = session.prepare(f"INSERT INTO {keyspace}.{table} (id, payload) VALUES (?, ?)")
        for start in range(first, first + count, 256):
            batch = [(i, os.urandom(ROW_BYTES)) for i in range(start, min(start + 256, first + count))]
            execute_concurrent_with_args(session, insert, batch, concurrency=32, raise_on_first_error=True)


def parse_args(doc: str, phases: dict, extra=lambda parser: None):
    """Common arguments; when run as a child (--phase), runs that phase, prints its JSON and exits."""
    parser = argparse.ArgumentParser(description=doc)
    extra(parser)
    parser.add_argument("--phase", choices=sorted(phases))
    parser.add_argument("--params", default="{}")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phases[args.phase](json.loads(args.params))))
        sys.exit(0)
    return args


def run_child(phase: str, **params) -> dict:
    """Runs `bench/<script> --phase …` in a fresh interpreter: its peak RSS is its own."""
    script = Path(sys.argv[0]).resolve()
    out = subprocess.run([sys.executable, str(script), "--phase", phase, "--params", json.dumps(params)],
                         capture_output=True, text=True, env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    if out.returncode != 0:
        sys.exit(f"bench phase {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
