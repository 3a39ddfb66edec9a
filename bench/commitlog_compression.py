"""Commit-log compression on the test bed: what shipping saves, and what it costs the node's CPU.

    .venv/bin/dmf-testbed up && .venv/bin/python bench/commitlog_compression.py [--rows 20000]

Ships what is archived (so the archive starts empty), writes event-like rows (ids, timestamps,
short enumerated strings, a sentence of text and a random token), then compresses node 1's newly
archived segments with the command dmf runs (`gzip -1 -n`), with `gzip -6` and `zstd -1` beside it
for comparison (one core each), and finally ships them with dmf and prints the bytes it stored.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KEYSPACE, bed, table  # noqa: E402

from cassandra.concurrent import execute_concurrent_with_args  # noqa: E402

from dmf.cql import connect  # noqa: E402
from dmf.flows.ship_commitlogs import ship_commitlogs  # noqa: E402

EVENTS = "events"
WORDS = "the quick brown fox jumps over lazy dog backup restore node cluster table row write read".split()


def write_events(block, rows: int) -> None:
    rng = random.Random(7)
    with connect(block, timeout=60) as session:
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.{EVENTS} (id uuid PRIMARY KEY, at timestamp, "
                        "kind text, account text, body text, ref text)")
        insert = session.prepare(f"INSERT INTO {KEYSPACE}.{EVENTS} (id, at, kind, account, body, ref) "
                                 "VALUES (?, toTimestamp(now()), ?, ?, ?, ?)")
        params = [(uuid.uuid4(), rng.choice(["login", "logout", "purchase", "refund", "view"]),
                   f"account-{rng.randrange(5000):05d}", " ".join(rng.choices(WORDS, k=rng.randrange(8, 40))),
                   "%032x" % rng.getrandbits(128)) for _ in range(rows)]
        execute_concurrent_with_args(session, insert, params, concurrency=64)


def compressed(command: list[str], segments: list[Path]) -> tuple[int, float]:
    """Bytes out and seconds of CPU-bound wall time for `command` over every segment."""
    out, started = 0, time.monotonic()
    for segment in segments:
        out += len(subprocess.run([*command, str(segment)], check=True, capture_output=True).stdout)
    return out, time.monotonic() - started


def main() -> None:
    rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 20000
    tb, cluster_block, _ = bed()
    ship_commitlogs()  # the archive starts empty
    write_events(cluster_block, rows)
    time.sleep(2)  # archiving runs when a segment closes
    archive = Path(cluster_block.host("127.0.0.1").commitlog_archive_dir)
    segments = sorted(archive.glob("CommitLog-*.log"))
    raw = sum(s.stat().st_size for s in segments)
    codecs = [("gzip -1 -n (dmf)", ["gzip", "-1", "-n", "-c"]), ("gzip -6 -n", ["gzip", "-6", "-n", "-c"])]
    if shutil.which("zstd"):
        codecs.append(("zstd -1", ["zstd", "-1", "-q", "-c"]))
    lines = []
    for name, command in codecs:
        out, seconds = compressed(command, segments)
        lines.append([name, f"{raw / 2**20:.1f}", f"{out / 2**20:.1f}", f"{raw / out:.2f}",
                      f"{raw / 2**20 / seconds:.0f}"])
    print(f"{len(segments)} segments of node 1 after {rows} event rows (RF 3):")
    print(table(lines, ["codec", "segments MiB", "stored MiB", "ratio", "MiB/s (one core)"]))
    shipped = ship_commitlogs()
    print(table([[r["host"], str(r["segments"]), f"{r['bytes'] / 2**20:.1f}", f"{r['stored_bytes'] / 2**20:.1f}",
                  f"{r['bytes'] / max(r['stored_bytes'], 1):.2f}"] for r in shipped],
                ["host", "segments", "MiB", "stored MiB", "ratio"]))


if __name__ == "__main__":
    main()
