"""Where a tiny backup's fixed cost goes, step by step: a full, an incremental and a commit-log
shipping run of the bed's three nodes, each run in this process with its steps timed (SSH connects,
remote commands and nodetool JVMs, the node agent, the lease, seals, Prefect's task runs), printed as
one timeline per run: start and end of each step in seconds from the flow's call.

    .venv/bin/python bench/backup_profile.py [--runs full,incremental,ship]

On a table of its own (`bench.tiny`, a few rows) and a bucket of its own (`dmf-bench-fixed`, the
repository block `bench-fixed`), so the bed's default bucket is left alone.
"""
from __future__ import annotations

import argparse
import os
import functools
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bed, table  # noqa: E402

from dmf.cql import connect  # noqa: E402

BLOCK, BUCKET = "bench-fixed", "dmf-bench-fixed"
KEYSPACE, TINY = "bench", "tiny"
_spans: list[tuple[float, float, str, str]] = []
_t0 = [0.0]


def fixed_block(repo):
    """The bed's repository on a bucket of its own, saved as BLOCK."""
    block = repo.model_copy(update={"bucket": BUCKET})
    s3 = block.client()
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    block.save(BLOCK, overwrite=True)
    return block


def tiny_table(cluster, rows: int = 20, first: int = 0, size: int = 100) -> None:
    with connect(cluster) as session:
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.{TINY} (id int PRIMARY KEY, v text)")
        insert = session.prepare(f"INSERT INTO {KEYSPACE}.{TINY} (id, v) VALUES (?, ?)")
        for i in range(first, first + rows):
            session.execute(insert, (i, os.urandom(size // 2).hex()))


def _timed(owner, name: str, label):
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            _spans.append((started - _t0[0], time.monotonic() - _t0[0], threading.current_thread().name,
                           label(*args, **kwargs)))
    setattr(owner, name, wrapper)


def instrument() -> None:
    import dmf.flows.backup_snapshot as flow_module
    import dmf.lease
    import dmf.node_upload
    import dmf.ssh
    from dmf.node import Node
    from prefect.concurrency import sync as concurrency

    _timed(dmf.ssh.RemoteHost, "connect", lambda self: f"ssh connect {self.host.address}")
    _timed(dmf.ssh.RemoteHost, "run", lambda self, argv, **kw: f"ssh run {self.host.address} "
           + ("nodetool" if "nodetool" in " ".join(argv) else argv[0]))
    _timed(Node, "nodetool", lambda self, *a, **kw: f"  nodetool {a[0]} {self.host.address} (JVM)")
    _timed(dmf.node_upload.NodeUpload, "start", lambda self: f"agent start {self.remote.host.address}")
    _timed(dmf.node_upload.NodeUpload, "run", lambda self, files, _: f"agent upload {self.remote.host.address} "
           f"({len(files)} files)")
    import dmf.flows.ship_commitlogs as ship_module
    for module in (flow_module, ship_module):
        _timed(module, "connect", lambda *a, **kw: "cql connect")
    import dmf.reporting
    import dmf.storage
    _timed(dmf.storage.Storage, "__init__", lambda *a, **kw: "s3 client (Storage)")
    _timed(dmf.reporting, "create_progress_artifact", lambda *a, **kw: "progress artifact created")
    _timed(dmf.reporting, "update_progress_artifact", lambda *a, **kw: "progress artifact updated")
    _timed(dmf.lease, "_ensure_prefect_limit", lambda *a: "lease: prefect limit ensured")
    _timed(concurrency, "concurrency", lambda *a, **kw: "lease: prefect slot (enter)")
    _timed(dmf.lease, "_read_leases", lambda *a: "lease: bucket leases read")
    for name in ("recent_history", "clean_incomplete"):
        _timed(flow_module, name, lambda *a, _n=name, **kw: _n)


def task_runs(flow_run_id) -> list[tuple[float, float, str]]:
    """Each task run's start and end (Prefect's record), in seconds since the flow run started."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    base = flow_run.start_time
    return sorted(((r.start_time - base).total_seconds(), (r.end_time - base).total_seconds(), r.name)
                  for r in runs if r.start_time and r.end_time)


def profile(name: str, call) -> None:
    _spans.clear()
    _t0[0] = time.monotonic()
    state = call(return_state=True)
    total = time.monotonic() - _t0[0]
    result = state.result(raise_on_failure=True)
    rows = [[f"{s:.2f}", f"{e:.2f}", f"{e - s:.2f}", what] for s, e, _, what in sorted(_spans)]
    print(f"\n## {name}: {total:.2f} s in all (Python call of the flow)"
          + (f", transfer {result['transfer_seconds']:.2f} s" if isinstance(result, dict) and
             'transfer_seconds' in result else ""))
    print(table(rows, ["start", "end", "s", "step (this process)"]))
    tasks = task_runs(state.state_details.flow_run_id)
    print(table([[f"{s:.2f}", f"{e:.2f}", f"{e - s:.2f}", n] for s, e, n in tasks],
                ["start", "end", "s", "task run (Prefect's record, from the flow run's start)"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="full,incremental,ship")
    args = parser.parse_args()
    _, cluster, repo = bed()
    fixed_block(repo)
    tiny_table(cluster)
    instrument()
    from dmf.flows.backup_snapshot import backup_snapshot
    from dmf.flows.ship_commitlogs import ship_commitlogs
    target = f"{KEYSPACE}.{TINY}"
    for run in args.runs.split(","):
        if run == "full":
            profile("full", lambda **kw: backup_snapshot(db_target=target, new=True, repository_block=BLOCK, **kw))
        elif run == "incremental":
            tiny_table(cluster, rows=5, first=int(time.time()) % 100000)
            profile("incremental", lambda **kw: backup_snapshot(db_target=target, repository_block=BLOCK, **kw))
        elif run == "ship":
            profile("ship", lambda **kw: ship_commitlogs(repository_block=BLOCK, **kw))


if __name__ == "__main__":
    main()
