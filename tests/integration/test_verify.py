"""backup-verify on the bed: a real backup verifies clean (deep too); a byte flipped in one of its
objects in S3 is found by --deep alone, named with the restore points it breaks, and
`dmf backup verify` exits 1. It reads the session's shared chain (a full and its increment), whose
object gets its bytes back at the end."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dmf.core.keys import SetRef
from dmf.core.timestamps import parse_ts
from dmf.flows.backup_verify import backup_verify
from dmf.repository import Repository
from dmf.storage import Storage
from dmf.testbed import prefect_server

from .helpers import HOSTS

pytestmark = pytest.mark.integration


def test_flipped_byte_is_found_deep_and_named_with_the_restore_points_it_breaks(testbed, repository_block,
                                                                               shared_chain):
    target = shared_chain["target"]
    snap, incr = shared_chain["full"]["snapshot_ts"], shared_chain["incr"]
    assert sorted(shared_chain["full"]["hosts"]) == HOSTS.split(",")
    assert incr["kind"] == "incremental" and incr["snapshot_ts"] == snap
    window = dict(start_time=snap, end_time=incr["set_ts"], db_target=target)

    clean = backup_verify(**window, deep=True)
    assert clean["clean"] and clean["problems"] == [] and clean["sets"] >= 6
    assert clean["hashed_objects"] == clean["objects"] > 0

    ref = SetRef.snapshot(parse_ts(snap), "127.0.0.1")
    entry = next(f for f in Repository(Storage(repository_block)).read_manifest(ref).files
                 if f.path.endswith("-Data.db") and f.size > 0)
    key = ref.file_key(entry.path)
    s3 = repository_block.client()
    original = s3.get_object(Bucket=repository_block.bucket, Key=key)["Body"].read()
    middle = len(original) // 2
    try:
        s3.put_object(Bucket=repository_block.bucket, Key=key,
                      Body=original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1:])

        assert backup_verify(**window)["clean"]  # the size is right: only the bytes tell
        report = backup_verify(**window, deep=True)
        assert [(p["object"], p["problem"]) for p in report["problems"]] == [(key, "sha256")]
        assert [(b["set"], b["from"]) for b in report["breaks"]] == [(ref.prefix, snap)]
        assert report["breaks"][0]["to"] >= incr["set_ts"]  # the whole chain, its increment too
        assert report["breaks"][0]["restore_points"].startswith(f"breaks restore points from {snap} to ")

        result = subprocess.run(
            [sys.executable, "-m", "dmf.cli", "backup", "verify", "--deep", "--start-time", snap,
             "--end-time", incr["set_ts"], "--db-target", target],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})
        assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
        assert entry.path in result.stdout and f"{ref.prefix} breaks restore points from {snap}" in result.stdout
        # stderr also carries the flow run's log lines; the verdict is one line of its own.
        verdicts = [line for line in result.stderr.splitlines() if line.startswith("dmf: error: ")]
        assert len(verdicts) == 1 and "1 damaged object(s) in 1 set(s) (1 sha256 mismatch)" in verdicts[0]
        assert "Traceback" not in result.stderr
    finally:
        s3.put_object(Bucket=repository_block.bucket, Key=key, Body=original)
    assert backup_verify(**window, deep=True)["clean"]
