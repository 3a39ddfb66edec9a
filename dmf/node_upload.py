"""Files uploaded by the node itself, the manager orchestrating and verifying.

Streaming through the manager costs an SSH hop's CPU per byte on both ends; the node instead runs
`dmf.node_agent` (sent over the SSH channel's stdin, run by the host's python) and PUTs each file,
or its parts, to presigned URLs the manager makes for it. The manager creates and completes each
multipart upload and checks every object's size and ETag against the MD5s of what the node read,
so a set is verified exactly as when bytes pass through it. The URLs travel on stdin only: not in
argv (ps), logs or errors.

URLs live only as long as their transfer needs. Jobs are pulled: the agent asks for the next file
when a reader is free to start it, and only then does the manager make that file's URLs. Pushing
every job at once would queue URLs in the SSH window (4 MiB: thousands of URLs, ~100 GiB of
parts) behind hours of transfer, so each would need hours of life; pulled, a URL's life is what its
own file needs up to its part (url_expiry_s), at a cost of one SSH round trip per file.
"""
from __future__ import annotations

import json
import math
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paramiko

from dmf import node_agent
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry
from dmf.node import SourceFile
from dmf.ssh import RemoteError, RemoteHost, command_argv
from dmf.storage import MIB, Storage, part_size_for

READY_TIMEOUT_S = 60
MAX_URL_EXPIRY_S = 7 * 24 * 3600  # SigV4's limit
# The slowest a node is expected to upload, all its files together; slower, late parts' URLs
# expire (HTTP 403) and the run fails, to be retried.
MIN_NODE_RATE = 2 * MIB
# Beyond the bytes before it: a part's own retries (node_agent: 4 attempts, 120 s socket timeout)
# and clock skew between the manager and S3.
URL_MARGIN_S = 600
# Reads the agent's source from stdin and runs it; the rest of stdin is the agent's.
BOOTSTRAP = ("import sys;n=int(sys.stdin.buffer.readline());"
             "exec(compile(sys.stdin.buffer.read(n),'dmf-node-agent','exec'))")


@dataclass
class _Upload:
    source: SourceFile
    key: str
    part_size: int
    upload_id: str | None = None  # set for a multipart upload
    # When its URL was signed: an object lock's date is signed into a single PUT's URL and sent again as a header.
    signed_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def url_expiry_s(end: int, concurrency: int) -> int:
    """Seconds the URL for a file's bytes up to `end` lives (its part's end; the size for a single PUT).

    URLs are made as the node starts the file, which then moves at no less than its share of
    MIN_NODE_RATE (one of `concurrency` files in flight), reading its parts in order."""
    return min(MAX_URL_EXPIRY_S, URL_MARGIN_S + math.ceil(end * concurrency / MIN_NODE_RATE))


def endpoint_header(presigner: Any) -> dict:
    """Where the agent finds S3 (it probes it before taking any job)."""
    endpoint = urllib.parse.urlsplit(presigner.meta.endpoint_url)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    return {"endpoint": [endpoint.hostname, port], "tls": endpoint.scheme == "https"}


def node_presigner(storage: Storage) -> Any:
    """The client whose URLs the nodes use: for the endpoint as they reach it."""
    repository = storage.repository
    return repository.client(repository.node_endpoint_url) if repository.node_endpoint_url else storage.s3


def start_agent(remote: RemoteHost, bootstrap: str, payload: bytes, header: dict
                ) -> tuple[paramiko.Channel, Any, dict] | str:
    """Runs `bootstrap` with the node's python, sends it `payload` (the agent's source) and `header`,
    and waits for the agent's first line: (channel, its lines, that message) once it is ready, else
    why the node cannot run it (then nothing ran and the channel is closed)."""
    channel = None
    try:
        channel = remote.start(command_argv(remote.host.python, "-c", bootstrap))
        channel.settimeout(READY_TIMEOUT_S)
        channel.sendall(payload + json.dumps(header).encode() + b"\n")
        lines = channel.makefile("rb")
        # What a login shell's profile printed before the agent's first line is skipped.
        message = next((json.loads(line) for line in lines if line.startswith(b"{")), None)
    except (OSError, paramiko.SSHException) as exc:
        if channel is not None:
            channel.close()
        return f"the node's python did not start: {exc}"
    if message is None:
        err = channel.recv_stderr(4096).decode(errors="replace").strip().splitlines()
        channel.close()
        return f"`{remote.host.python}` on the node failed" + (f": {err[-1][:200]}" if err else "")
    if "unreachable" in message:
        channel.close()
        return f"the node cannot reach S3 at {message['unreachable']}"
    channel.settimeout(None)
    return channel, lines, message


class NodeUpload:
    """One agent on one node, for one set's files."""

    def __init__(self, remote: RemoteHost, storage: Storage, set_ref: SetRef,
                 progress: Callable[[int], None] | None = None):
        self.remote, self.storage, self.set_ref = remote, storage, set_ref
        self.progress = progress or (lambda _: None)
        self._presigner = node_presigner(storage)
        self._channel: paramiko.Channel | None = None
        self._lines: Any = None

    def start(self) -> str | None:
        """Starts the agent; None when it is ready, else why the node cannot upload (then nothing ran)."""
        limit = self.storage.repository.max_upload_mib_s
        header = {**endpoint_header(self._presigner), "concurrency": self.storage.repository.max_concurrency,
                  "max_bytes_per_s": None if limit is None else limit * MIB}
        script = Path(node_agent.__file__).read_bytes()
        started = start_agent(self.remote, BOOTSTRAP, b"%d\n" % len(script) + script, header)
        if isinstance(started, str):
            return started
        self._channel, self._lines, _ = started
        return None

    def run(self, files: list[SourceFile], match_existing: Callable[[str, SourceFile], FileEntry | None]
            ) -> list[FileEntry]:
        """Uploads `files` through the started agent. `match_existing` returns the entry of a file a
        previous attempt already stored (a retried run resumes), or None."""
        pending: dict[int, _Upload] = {}
        lock = threading.Lock()
        entries: list[FileEntry] = []
        errors: list[str] = []
        asked = threading.Semaphore(0)  # one per agent request for a job
        stopped = threading.Event()

        def stop_sending() -> None:
            stopped.set()
            asked.release()

        def send_jobs() -> None:
            try:
                for number, source in enumerate(files):
                    upload = self._prepare(source)
                    existing = match_existing(upload.key, source)
                    if existing is not None:
                        with lock:
                            entries.append(existing)
                        continue
                    asked.acquire()
                    if stopped.is_set():  # the agent is gone
                        break
                    with lock:
                        pending[number] = upload  # from here on, a failure aborts its multipart upload
                    urls = self._open(upload)
                    job = {"id": number, "path": source.path, "size": source.size, "part_size": upload.part_size,
                           "urls": urls, "headers": self._headers(upload)}
                    self._channel.sendall(json.dumps(job).encode() + b"\n")
            except Exception as exc:  # noqa: BLE001 — reported with the agent's own errors below
                with lock:
                    errors.append(str(exc))
            finally:
                try:
                    self._channel.sendall(b"\n")  # no more jobs
                    self._channel.shutdown_write()
                except (OSError, paramiko.SSHException):
                    pass

        def finish(upload: _Upload, message: dict) -> None:
            """Seals one file's upload from the agent's report: completed and verified, or aborted."""
            error = message.get("error")
            if error is None:
                md5s = [bytes.fromhex(m) for m in message["md5s"]]
                try:
                    self._seal(upload, md5s, message["etags"], message["sha256"])
                    with lock:
                        entries.append(FileEntry(upload.source.relpath, upload.source.size, message["sha256"]))
                    return
                except Exception as exc:  # noqa: BLE001 — the file's error, raised with the others below
                    error = str(exc)
            with lock:
                errors.append(f"{upload.source.path}: {error}")
            self._abort(upload)

        sender = threading.Thread(target=send_jobs, name=f"jobs-{self.set_ref.node}", daemon=True)
        sealers = ThreadPoolExecutor(self.storage.repository.max_concurrency, thread_name_prefix="seal")
        sender.start()
        try:
            for line in self._lines:
                message = json.loads(line)
                if "progress" in message:
                    self.progress(message["progress"])
                    continue
                if "next" in message:
                    asked.release()
                    continue
                with lock:
                    upload = pending.pop(message["id"])
                sealers.submit(finish, upload, message)
            stop_sending()
            sender.join()
            status = self._channel.recv_exit_status()
            stderr = self._channel.recv_stderr(65536).decode(errors="replace").strip().splitlines() \
                if status != 0 else []
        finally:
            stop_sending()
            sender.join(timeout=5)
            sealers.shutdown(wait=True)
            with lock:
                unfinished = list(pending.values())
                pending.clear()
            for upload in unfinished:
                self._abort(upload)
            self.close()
        if status != 0 and not errors:
            errors.append(f"the upload agent exited {status}" + (f": {stderr[-1][:300]}" if stderr else ""))
        if not errors and len(entries) != len(files):  # never a manifest that misses a file
            errors.append(f"{len(files) - len(entries)} files had no result from the upload agent")
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise RemoteError(f"{self.remote.host.address}: node upload failed: {errors[0]}{more}")
        return entries

    def _prepare(self, source: SourceFile) -> _Upload:
        part_size = part_size_for(source.size, self.storage.repository.part_size_mib * MIB)
        return _Upload(source, self.set_ref.file_key(source.relpath), part_size)

    def _open(self, upload: _Upload) -> list[str]:
        """The URLs the node PUTs to: one for a file within a part, else a multipart upload's parts."""
        size, concurrency = upload.source.size, self.storage.repository.max_concurrency
        if size <= upload.part_size:
            return [self.storage.presign_put(upload.key, url_expiry_s(size, concurrency), self._presigner,
                                            upload.signed_at)]
        upload.upload_id = self.storage.create_multipart(upload.key, checksums=False)
        return [self.storage.presign_part(upload.key, upload.upload_id, n,
                                          url_expiry_s(min(n * upload.part_size, size), concurrency), self._presigner)
                for n in range(1, math.ceil(size / upload.part_size) + 1)]

    def _headers(self, upload: _Upload) -> dict[str, str]:
        """The encryption headers signed into the file's URLs, which the node must send with them."""
        repository = self.storage.repository
        return repository.write_headers(upload.signed_at) if upload.upload_id is None else repository.key_headers()

    def _seal(self, upload: _Upload, md5s: list[bytes], etags: list[str], sha256: str) -> None:
        """Verifies the stored object against what the node read (completing a multipart upload with
        the part ETags S3 gave the node: MD5s, unless the store encrypts with KMS or SSE-C)."""
        if upload.upload_id is None:
            self.storage.verify(upload.key, etags[0], md5s[0].hex(), upload.source.size, sha256)
        else:
            parts = [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in enumerate(etags, 1)]
            self.storage.complete_multipart(upload.key, upload.upload_id, parts, md5s, upload.source.size, sha256)

    def _abort(self, upload: _Upload) -> None:
        if upload.upload_id is not None:
            self.storage.abort_multipart(upload.key, upload.upload_id)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class EarlyAgent:
    """A node agent started ahead of its files, on a connection of its own, while the node still
    prepares them (a snapshot's JVM, commit-log compression): its SSH handshake and python start
    (~1 s on the test bed) leave the critical path. `take()` hands it over ready, or None, and the
    caller starts one as usual (which then says why the node cannot upload). `close()` always."""

    def __init__(self, cluster, host, storage: Storage, set_ref: SetRef):
        self._remote = RemoteHost(cluster, host)
        self._agent: NodeUpload | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._start, args=(storage, set_ref), daemon=True,
                                        name=f"agent-{host.address}")
        self._thread.start()

    def _start(self, storage: Storage, set_ref: SetRef) -> None:
        try:
            agent = NodeUpload(self._remote.connect(), storage, set_ref)
            if agent.start() is None:
                self._agent = agent
        except Exception:  # noqa: BLE001 — the caller starts its own agent, which reports the cause
            pass

    def take(self, progress: Callable[[int], None] | None = None) -> NodeUpload | None:
        self._thread.join()
        if self._agent is None or self._taken:
            return None
        self._taken = True
        self._agent.progress = progress or (lambda _: None)
        return self._agent

    def close(self) -> None:
        self._thread.join()
        if self._agent is not None:
            self._agent.close()
        self._remote.close()
