"""A node's share of a restore, fetched and loaded on the node itself, the worker orchestrating.

The worker starts `dmf.node_fetch_agent` on the node (over SSH, with the node's python) and hands it
one file at a time as it asks, each with a presigned GET made then: the node streams the object
from S3 into its staging folder, checks size and SHA-256 and reports; no restored byte passes
through the worker. Files already staged and matching the manifest are skipped (a rerun resumes).
Each table set is then imported from hard links of the staged files, so the staged files stay for
a rerun until the restore has succeeded. URLs travel on stdin only: not in argv (ps), logs or errors.

Client-side encrypted files reach the node path only where the repository says decrypt_on_nodes
(dmf.core.node_restore): the agent, sent dmf.stream_cipher's source too, first checks that the node's
python can decrypt (else the node takes the worker path), and is then sent the master key on stdin,
like the URLs.
"""
from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmf import node_agent, node_fetch_agent, stream_cipher
from dmf.core.errors import DmfError
from dmf.core.node_load import LOAD_DIR
from dmf.core.node_restore import IMPORT_DIR, NodeFile, Room, StagedUnit
from dmf.loader import import_folder
from dmf.node_upload import endpoint_header, node_presigner, start_agent
from dmf.ssh import RemoteError, RemoteHost
from dmf.storage import Storage

# A presigned GET is checked when the request starts, not while the body streams: it needs to live
# only through the agent's retries of the request (4 attempts, 120 s socket timeout) and clock skew.
URL_EXPIRY_S = 900
# Loads dmf.node_agent and dmf.stream_cipher (which the fetch agent builds on) as modules, then runs
# the fetch agent: the three sources come on stdin, each after its length; the rest of stdin is the agent's.
MODULES = (node_agent, stream_cipher)
BOOTSTRAP = ("import sys,types\nr=sys.stdin.buffer\n"
             f"for n in {tuple(m.__name__.rpartition('.')[2] for m in MODULES)!r}:\n"
             " m=types.ModuleType(n);exec(compile(r.read(int(r.readline())),n,'exec'),m.__dict__);sys.modules[n]=m\n"
             "exec(compile(r.read(int(r.readline())),'dmf-node-fetch-agent','exec'))")


@dataclass(frozen=True)
class Fetched:
    """What one node's agent reported."""

    fetched_files: int
    fetched_bytes: int
    skipped_files: int
    skipped_bytes: int
    agent_rss_kib: int


def _payload() -> bytes:
    return b"".join(b"%d\n" % len(source) + source for source in
                    (Path(module.__file__).read_bytes() for module in (*MODULES, node_fetch_agent)))


class NodeFetch:
    """The fetch agent on one node, staging below `staging` (the host's restore_staging_dir)."""

    def __init__(self, remote: RemoteHost, storage: Storage, staging: str,
                 progress: Callable[[int], None] | None = None, max_bytes_per_s: float | None = None,
                 backoff_s: float = 0.5, skipped: Callable[[int], None] | None = None):
        self.remote, self.storage, self.staging, self.backoff_s = remote, storage, staging, backoff_s
        self.progress = progress or (lambda _: None)
        self.skipped = skipped or (lambda _: None)  # bytes found already staged and verified
        self.max_bytes_per_s = max_bytes_per_s
        self._presigner = node_presigner(storage)

    def _header(self, share: tuple[NodeFile, ...], send_key: bool, **extra: Any) -> dict:
        """The agent's header; where files of `share` are client-side encrypted, it is asked to decrypt,
        and sent the key with `send_key`."""
        header = {**endpoint_header(self._presigner), "root": self.staging, **extra}
        if any(f.plain is not None for f in share):
            repository = self.storage.repository
            if not repository.decrypt_on_nodes:  # the plan keeps such files off the node path: never reached
                raise DmfError("client-side encrypted files, and decrypt_on_nodes is off: the key stays on the worker")
            header["decrypt"] = True
            if send_key:
                header["key"] = base64.b64encode(repository.client_key()).decode("ascii")
        return header

    def _start(self, header: dict) -> tuple[Any, Any, dict] | str:
        started = start_agent(self.remote, BOOTSTRAP, _payload(), header)
        if isinstance(started, str) or "cannot_decrypt" not in started[2]:
            return started
        started[0].close()
        return f"the node's python cannot decrypt: {started[2]['cannot_decrypt']}"

    def preflight(self, files: tuple[NodeFile, ...]) -> Room | str:
        """The room on the node for `files`, or why the node cannot fetch (no python, S3 unreachable,
        encrypted files and no `cryptography`)."""
        started = self._start(self._header(files, send_key=False, files=[[f.path, f.staged_size] for f in files]))
        if isinstance(started, str):
            return started
        channel, _, message = started
        channel.close()
        return Room(message["free"], message["present"])

    def run(self, files: tuple[NodeFile, ...]) -> Fetched:
        """Fetches `files` (the largest first, so the last to finish is a small one); raises
        RemoteError naming the first file that failed, after the others have finished."""
        header = self._header(files, send_key=True, concurrency=self.storage.repository.max_concurrency,
                              max_bytes_per_s=self.max_bytes_per_s, backoff_s=self.backoff_s)
        started = self._start(header)
        if isinstance(started, str):
            raise RemoteError(f"{self.remote.host.address}: node fetch did not start: {started}")
        channel, lines, _ = started
        jobs = iter(sorted(enumerate(files), key=lambda job: -job[1].size))
        results: dict[int, dict] = {}
        rss = 0
        try:
            for line in lines:
                message = json.loads(line)
                if "progress" in message:
                    self.progress(message["progress"])
                elif "next" in message:
                    channel.sendall(self._job(next(jobs, None)))
                elif "id" in message:
                    results[message["id"]] = message
                    if "skipped" in message:
                        self.skipped(message["skipped"])
                elif message.get("done"):
                    rss = message["rss_kib"]
            status = channel.recv_exit_status()
        finally:
            channel.close()
        errors = [f"{files[i].path}: {m['error']}" for i, m in sorted(results.items()) if "error" in m]
        if not errors and (status != 0 or len(results) != len(files)):
            errors.append(f"the fetch agent exited {status} with {len(files) - len(results)} file(s) unreported")
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise RemoteError(f"{self.remote.host.address}: node fetch failed: {errors[0]}{more}")
        fetched = [i for i, m in results.items() if "fetched" in m]
        return Fetched(len(fetched), sum(files[i].size for i in fetched), len(files) - len(fetched),
                       sum(m["skipped"] for m in results.values() if "skipped" in m), rss)

    def _job(self, job: tuple[int, NodeFile] | None) -> bytes:
        if job is None:
            return b"\n"  # no more jobs: a blank line for each downloader that asks
        number, file = job
        encrypted = {} if file.plain is None else {"plain": [file.plain.size, file.plain.sha256], "key": file.key}
        return json.dumps({"id": number, "path": file.path, "size": file.size, "sha256": file.sha256,
                           "url": self.storage.presign_get(file.key, URL_EXPIRY_S, self._presigner),
                           "headers": self.storage.repository.key_headers(), **encrypted}).encode() + b"\n"


def import_staged(remote: RemoteHost, staging: str, unit: StagedUnit) -> None:
    """Hard-links the unit's staged SSTables into a folder of their own and runs `nodetool import`
    on it, which moves the links into the table: the staged files stay for a rerun, at no extra
    space. Dies before the import: the links are made anew by a rerun. After it: the rows are
    loaded, and loading the same SSTables again on a rerun is harmless (cells keep their timestamps)."""
    source, folder = posixpath.join(staging, unit.directory), posixpath.join(staging, unit.import_directory)
    remote.run(["rm", "-rf", "--", folder])
    remote.run(["mkdir", "-p", "--", folder])
    for start in range(0, len(unit.names), 500):  # argv stays well under the kernel's limit
        remote.run(["ln", "--", *(posixpath.join(source, n) for n in unit.names[start:start + 500]), folder])
    import_folder(remote, unit.keyspace, unit.table, folder, unit.label, unit.names)


def remove_staged(remote: RemoteHost, staging: str, snapshot: str, keep_files: bool) -> None:
    """The snapshot's staged files (unless `keep_files`) and its import and load folders (always)."""
    folders = [posixpath.join(staging, IMPORT_DIR, snapshot), posixpath.join(staging, LOAD_DIR, snapshot),
               *([] if keep_files else [posixpath.join(staging, snapshot)])]
    remote.run(["rm", "-rf", "--", *folders])
