"""Bandwidth limit benchmark, without the test bed: the throughput dmf's own transfer functions
reach under max_upload_mib_s / max_download_mib_s, against a moto S3 server on 127.0.0.1 (in its
own process).

    .venv/bin/python bench/bandwidth.py [--limits 5,20,50] [--seconds 4]

Four paths, each moving about `seconds` worth of data at the limit in four files, in parallel:
  limiter alone    the files read from local disk through one shared bucket (dmf.throttle), on
                   four threads: the limiter with nothing else to slow it
  node upload      dmf.transfer.upload_files as a backup runs it: the node agent (a local python
                   process here, fed through NodeUpload as over SSH) PUTs to presigned URLs
  manager upload   the same call with upload_from_nodes off: the files' bytes read (from local
                   disk here, over SSH on a real node) through the host's bucket into multipart uploads
  restore download dmf.download.fetch_all, as a restore fetches into PATH
Only SSH is replaced by local processes and files; the limiting code is the product's. Each
rate is measured where the limit is for (MEASURED_ON), in the steady state, and end to end. An
unlimited run first shows what each path reaches here (moto takes uploads far slower than it
serves downloads, and both ends hash every byte). Every limited run must stay within 10% of its
limit; a path that cannot do twice the limit unlimited is only held to not exceeding it by over
10% (its shortfall is the server's or the CPU's, not the limiter's).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import SecretStr

import dmf.transfer
from dmf.blocks import S3Repository
from dmf.core.keys import SetRef
from dmf.core.timestamps import utcnow
from dmf.download import Fetch, fetch_all
from dmf.node import SourceFile
from dmf.storage import MIB, Storage
from dmf.throttle import bucket_for, throttled

FILES = 4
BUCKET = "dmf-bench"
HEADROOM = 2.0  # unlimited throughput over the limit needed for the limit to be the only brake


class LocalProcess:
    """What NodeUpload uses of an SSH channel, over a local process: the agent runs as on a node."""

    def __init__(self, argv: list[str]):
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def settimeout(self, _: float | None) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self._process.stdin.write(data)
        self._process.stdin.flush()

    def shutdown_write(self) -> None:
        self._process.stdin.close()

    def makefile(self, _: str):
        return self._process.stdout

    def recv_exit_status(self) -> int:
        return self._process.wait()

    def recv_stderr(self, size: int) -> bytes:
        return self._process.stderr.read(size)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


@dataclass
class LocalHost:
    """A node whose files are on this machine: what upload_files uses of RemoteHost."""
    address: str = "127.0.0.1"
    python: str = sys.executable

    @property
    def host(self) -> LocalHost:
        return self

    def start(self, argv: list[str]) -> LocalProcess:
        return LocalProcess(argv)

    def iter_file(self, path: str, size: int | None = None, chunk: int = MIB):
        with open(path, "rb") as source:
            while data := source.read(chunk):
                METER.record("node read", len(data))  # what would cross SSH
                yield data


class LocalPool:
    """Stands in for dmf.transfer.ConnectionPool (one SSH connection per thread)."""

    def __init__(self, *_):
        self.node = LocalHost()

    def get(self) -> LocalHost:
        return self.node

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def repository(endpoint: str, **fields) -> S3Repository:
    return S3Repository(bucket=BUCKET, credentials=AwsCredentials(
        aws_access_key_id="bench", aws_secret_access_key=SecretStr("bench"), region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint)), addressing_style="path", **fields)


def make_files(directory: Path, total: int) -> list[SourceFile]:
    block = os.urandom(MIB)
    files = []
    for number in range(FILES):
        path = directory / f"nb-{number + 1}-big-Data.db"
        with open(path, "wb") as out:
            for _ in range(total // FILES // MIB):
                out.write(block)
        files.append(SourceFile(str(path), f"bench/data-{'0' * 32}/{path.name}", path.stat().st_size))
    return files


def empty(storage: Storage) -> None:
    keys = [o["Key"] for o in storage.list_objects("")]
    if keys:
        storage.delete_keys(keys)


def upload(storage: Storage, files: list[SourceFile]) -> float:
    started = time.monotonic()
    entries = dmf.transfer.upload_files(None, LocalHost(), storage, SetRef.snapshot(utcnow(), "127.0.0.1"),
                                        files, resume=False)
    seconds = time.monotonic() - started
    assert len(entries) == len(files)
    return seconds


def read_locally(limit: float | None, files: list[SourceFile]) -> float:
    bucket = bucket_for(limit)

    def read(source: SourceFile) -> int:
        return sum(len(chunk) for chunk in throttled(LocalHost().iter_file(source.path), bucket))

    started = time.monotonic()
    with ThreadPoolExecutor(len(files)) as threads:
        assert sum(threads.map(read, files)) == sum(f.size for f in files)
    return time.monotonic() - started


def download(storage: Storage, files: list[SourceFile], into: Path) -> float:
    ref = SetRef.snapshot(utcnow(), "127.0.0.1")
    fetches = []
    for source in files:
        data = Path(source.path).read_bytes()
        storage.s3.put_object(Bucket=BUCKET, Key=ref.file_key(source.relpath), Body=data)
        fetches.append(Fetch(ref.file_key(source.relpath), into / source.relpath, len(data),
                             hashlib.sha256(data).hexdigest()))
    started = time.monotonic()
    fetch_all(storage, into, fetches, storage.repository.max_concurrency)
    seconds = time.monotonic() - started
    for fetch in fetches:
        fetch.dest.unlink()
    return seconds


class Meter:
    """A TCP relay in front of the S3 server that timestamps the bytes it carries each way: what a
    counter on the node's network interface would show, without the transfer's start (agent, multipart
    creation) and end (verification). Also what others record."""

    def __init__(self):
        self._lock = threading.Lock()
        self._carried: dict[str, list[tuple[float, int]]] = {}

    def relay_to(self, server_port: int) -> int:
        """Starts relaying to `server_port`; returns the port to connect to instead."""
        self.server_port = server_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()
        return self._listener.getsockname()[1]

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            server = socket.create_connection(("127.0.0.1", self.server_port))
            for source, sink, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(source, sink, direction), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(MIB):
                sink.sendall(data)
                self.record(direction, len(data))
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def reset(self) -> None:
        with self._lock:
            self._carried.clear()

    def record(self, direction: str, nbytes: int) -> None:
        with self._lock:
            self._carried.setdefault(direction, []).append((time.monotonic(), nbytes))

    def rate(self, direction: str) -> float:
        """MiB/s carried `direction` in the steady state: from 10% of the bytes to 90%. Out go the
        transfer's start, where each thread has a chunk in hand before the bucket holds it back, and
        its end."""
        with self._lock:
            records = list(self._carried[direction])
        total = sum(n for _, n in records)
        done, start = 0, None
        for at, nbytes in records:
            done += nbytes
            if start is None and done >= 0.1 * total:
                start, done_at_start = at, done
            if done >= 0.9 * total:
                return (done - done_at_start) / MIB / (at - start)
        raise AssertionError("nothing carried")


METER = Meter()
MEASURED_ON = {"limiter alone": "chunks read", "node upload": "node's PUTs on the wire",
               "manager upload": "node's bytes read", "restore download": "bytes into PATH (end to end)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", default="5,20,50", help="MiB/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="data moved per run, in seconds at the limit")
    args = parser.parse_args()
    limits = [float(x) for x in args.limits.split(",")]

    dmf.transfer.ConnectionPool = LocalPool  # the only stand-in: local files instead of SSH
    port = free_port()
    # Its own process: in this one it would compete for the GIL with the transfers it measures.
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_for(port)
        endpoint = f"http://127.0.0.1:{METER.relay_to(port)}"
        repository(endpoint).client().create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory(prefix="dmf-bench-bw-") as scratch:
            for limit in [None, *limits]:
                total = 128 * MIB if limit is None else max(32, round(limit * args.seconds / FILES) * FILES) * MIB
                source_dir, into = Path(scratch, "src"), Path(scratch, "restore")
                source_dir.mkdir(exist_ok=True)
                into.mkdir(mode=0o700, exist_ok=True)
                files = make_files(source_dir, total)
                # Measured where the limit is for: what the node sends (its PUTs; its bytes read over
                # SSH), and what the restore takes into PATH (TCP buffers let each GET's first MiBs in
                # ahead of that, so the download's wire shows bursts; over the run it averages out).
                paths = [("limiter alone", "node read", {}, lambda _: read_locally(limit, files)),
                         ("node upload", "up", dict(max_upload_mib_s=limit), lambda s: upload(s, files)),
                         ("manager upload", "node read", dict(max_upload_mib_s=limit, upload_from_nodes=False),
                          lambda s: upload(s, files)),
                         ("restore download", None, dict(max_download_mib_s=limit),
                          lambda s: download(s, files, into))]
                for name, direction, fields, run in paths:
                    storage = Storage(repository(endpoint, **fields))
                    METER.reset()
                    seconds = run(storage)
                    whole = total / MIB / seconds
                    measured = whole if direction is None else METER.rate(direction)
                    empty(storage)
                    rows.append((name, limit, total, whole, measured))
                    print(f"  {name:<17} limit {limit or '-':>5}: {measured:7.1f} MiB/s", file=sys.stderr)
                for source in files:
                    os.unlink(source.path)
    finally:
        server.terminate()
        server.wait()

    print("\n| path | measured on | limit MiB/s | MiB moved | end to end MiB/s | measured MiB/s | "
          "measured / limit |")
    print("|---|---|---:|---:|---:|---:|---:|")
    failed, unlimited = [], {}
    for name, limit, total, whole, measured in rows:
        ratio = "-"
        if limit is None:
            unlimited[name] = measured
        else:
            ratio = f"{measured / limit:.3f}"
            bound_elsewhere = unlimited[name] < HEADROOM * limit
            if measured > 1.1 * limit or (measured < 0.9 * limit and not bound_elsewhere):
                failed.append(f"{name} at {limit:g} MiB/s")
            if bound_elsewhere:
                ratio += " (path-bound: only the upper bound checked)"
        print(f"| {name} | {MEASURED_ON[name]} | {limit or 'none'} | {total // MIB} | {whole:.1f} | {measured:.1f} "
              f"| {ratio} |")
    print("\nevery limit held within 10%" if not failed else f"\nNOT within 10%: {', '.join(failed)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
