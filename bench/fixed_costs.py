"""What a command costs before it does any work: `dmf --help`, `dmf backup list` on an empty bucket and
`dmf backup status`, each the median of 3 wall-clock runs of the `dmf` command in a child process, on
the test bed (its Prefect server and S3). The list also through its flow, as every command ran before
the CLI answered read-only commands itself (Prefect's settings made unreadable to the direct path, so
the CLI falls back to the flow).

    .venv/bin/python bench/fixed_costs.py [--runs 3]

The empty bucket is `dmf-bench-empty`, saved as the repository block `bench-empty`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from dmf.storage import Storage  # noqa: E402
from dmf.testbed import prefect_server  # noqa: E402
from dmf.testbed.blocks import repository  # noqa: E402
from dmf.testbed.layout import Testbed  # noqa: E402

EMPTY_BLOCK, EMPTY_BUCKET = "bench-empty", "dmf-bench-empty"
DMF = str(Path(sys.executable).parent / "dmf")


def empty_block(tb: Testbed) -> None:
    block = repository(tb).model_copy(update={"bucket": EMPTY_BUCKET})
    storage = Storage(block)
    if EMPTY_BUCKET not in {b["Name"] for b in storage.s3.list_buckets()["Buckets"]}:
        storage.s3.create_bucket(Bucket=EMPTY_BUCKET)
    assert not storage.list_prefixes(""), f"{EMPTY_BUCKET} is not empty"
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url(tb)}):
        block.save(EMPTY_BLOCK, overwrite=True)


def median_s(args: list[str], env: dict, runs: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(runs):
        started = time.monotonic()
        code = subprocess.run([DMF, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        times.append(time.monotonic() - started)
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tb = Testbed.from_env()
    empty_block(tb)
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url(tb)}
    through_flow = {**env, "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "true"}  # a setting the direct path leaves to Prefect
    cases = [("dmf --help", ["--help"], env),
             ("dmf backup list --json (empty bucket)", ["backup", "list", "--json", "--repository-block", EMPTY_BLOCK],
              env),
             ("dmf backup status --json (empty bucket)",
              ["backup", "status", "--json", "--repository-block", EMPTY_BLOCK], env),
             ("dmf backup list --json (empty bucket), through the flow",
              ["backup", "list", "--json", "--repository-block", EMPTY_BLOCK], through_flow)]
    rows = []
    for name, argv, case_env in cases:
        seconds, code = median_s(argv, case_env, args.runs)
        rows.append([name, f"{seconds:.2f}", str(code)])
    load = os.getloadavg()[0]
    print(table(rows, ["command", f"median of {args.runs} (s)", "exit"]))
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
