"""moto in server mode on loopback, with the backup bucket created."""
from __future__ import annotations

import sys
from pathlib import Path

import boto3

from . import procs
from .layout import BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, Testbed


def _pid_file(tb: Testbed) -> Path:
    return tb.run / "s3.pid"


def is_running(tb: Testbed) -> bool:
    return procs.read_pid(_pid_file(tb)) is not None


def client(tb: Testbed):
    return boto3.client("s3", endpoint_url=tb.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)


def start(tb: Testbed) -> None:
    tb.run.mkdir(parents=True, exist_ok=True)
    log = tb.logs / "s3.log"
    procs.spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(tb.s3_port)],
                log_file=log, pid_file=_pid_file(tb), cwd=tb.run)
    procs.wait_until(lambda: procs.port_open("127.0.0.1", tb.s3_port), what="S3 server (moto)",
                     timeout=60, pid_file=_pid_file(tb), log_file=log)


def ensure_bucket(tb: Testbed) -> None:
    s3 = client(tb)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET)


def stop(tb: Testbed) -> bool:
    return procs.stop(_pid_file(tb), marker="moto.server")
