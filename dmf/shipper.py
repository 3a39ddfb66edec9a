"""The long-lived commit-log shipper on one node: one SSH session and one agent (dmf.node_watch_agent)
kept open for the run's life. The agent reports each segment within LOOK_EVERY_S of its archiving
(compressed beside it, as the one-shot shipper does); the manager presigns its URLs, the agent PUTs it,
the manager verifies the object and puts it in the node's open batch, sealed SEAL_EVERY_S after its
first segment (dmf.core.shipper decides), then has the agent delete what is sealed.

Under client-side encryption (or wherever the repository refuses uploads from nodes) a segment's bytes
stream through this process instead (dmf.transfer.upload_files), the agent still watching.

What dies where (a successor, at most a minute later, resumes; segments leave the node only once sealed):
  upload, before the seal    the batch has no manifest (swept past the grace); the successor ships its
                             segments again in a batch of its own
  seal, before the deletes   the successor finds the segments in that sealed batch and deletes them
                             unsent, so no sealed batch holds a segment twice
  lease lost (not renewed)   check_lease stops this run before its next upload or seal
"""
from __future__ import annotations

import json
import logging
import posixpath
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paramiko

from dmf import node_agent, node_watch_agent
from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.catalog import SEGMENTS_CLOSED_AT
from dmf.core.errors import DmfError, LayoutError, PermanentError
from dmf.core.keys import SetRef, heartbeat_key
from dmf.core.manifest import FileEntry
from dmf.core.segments import SEGMENTS_COMPRESSED, archiving_problem, compressed_record
from dmf.core.shipper import (HEARTBEAT_EVERY_S, SEAL_EVERY_S, SEGMENT_PREFIXES, Heartbeat, batch_time, drainable,
                              lag_flags, prefix_due, recovery_point, seal_due, to_ship)
from dmf.core.sweep import seal_deadline
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import NodeFacts
from dmf.lease import check_lease
from dmf.node import SourceFile
from dmf.node_upload import READY_TIMEOUT_S, NodeUpload
from dmf.replay import PROPERTIES
from dmf.repository import Repository
from dmf.ssh import RemoteError, RemoteFile, RemoteHost, command_argv
from dmf.storage import MIB, Storage
from dmf.tasks.commitlogs import already_shipped
from dmf.tasks.upload import Uploaded, seal_set
from dmf.transfer import upload_files

log = logging.getLogger(__name__)
WATCH_S = 0.5  # the longest one watch request waits: the loop seals and beats between two
# How often the full that batches go under is looked up again: a backup may take a new full meanwhile,
# and a restore from it reads the batches under its own prefix.
FULL_EVERY_S = 60.0
LAG_EVENT_EVERY_S = 60.0  # the `dmf.commitlog.lag-exceeded` event, for deployments/automations.yaml
# Reads dmf.node_agent's source, runs it as a module (not __main__), then the watch agent with it as `agent`.
BOOTSTRAP = ("import sys;r=sys.stdin.buffer;a={'__name__':'dmf_node_agent'};"
             "exec(compile(r.read(int(r.readline())),'dmf-node-agent','exec'),a);"
             "exec(compile(r.read(int(r.readline())),'dmf-watch-agent','exec'),{'__name__':'__main__','agent':a})")


class WatchAgent:
    """The node's watching agent, over one SSH channel: a request, then its one-line answer."""

    def __init__(self, remote: RemoteHost, storage: Storage, archive_dir: str, compress: bool, probe: bool,
                 cdc_dir: str | None = None):
        self.remote, self.storage = remote, storage
        self.archive_dir, self.compress, self.probe, self.cdc_dir = archive_dir, compress, probe, cdc_dir
        self._channel: paramiko.Channel | None = None
        self._lines: Any = None

    def start(self, endpoint_url: str) -> None:
        endpoint = urllib.parse.urlsplit(endpoint_url)
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        limit = self.storage.repository.max_upload_mib_s
        header = {"endpoint": [endpoint.hostname, port], "tls": endpoint.scheme == "https",
                  "max_bytes_per_s": None if limit is None else limit * MIB, "archive_dir": self.archive_dir,
                  "gzip": self.compress, "probe": self.probe, "cdc_dir": self.cdc_dir}  # no probe: it only watches, bytes go via us
        sources = b"".join(b"%d\n" % len(s) + s for s in (Path(m.__file__).read_bytes()
                                                           for m in (node_agent, node_watch_agent)))
        self._channel = self.remote.start(command_argv(self.remote.host.python, "-c", BOOTSTRAP))
        self._channel.settimeout(READY_TIMEOUT_S)
        self._channel.sendall(sources + json.dumps(header).encode() + b"\n")
        self._lines = self._channel.makefile("rb")
        for line in self._lines:  # what a login shell's profile printed first is skipped
            if line.startswith(b"{"):
                message = json.loads(line)
                break
        else:
            err = self._channel.recv_stderr(4096).decode(errors="replace").strip().splitlines()
            raise RemoteError(f"{self.remote.host.address}: the watch agent did not start"
                              + (f": {err[-1][:200]}" if err else ""))
        if "unreachable" in message:
            raise RemoteError(f"{self.remote.host.address}: the node cannot reach S3 at {message['unreachable']}")
        self._channel.settimeout(None)

    def call(self, request: dict) -> dict:
        self._channel.sendall(json.dumps(request).encode() + b"\n")
        line = self._lines.readline()
        if not line:
            raise RemoteError(f"{self.remote.host.address}: the watch agent stopped")
        return json.loads(line)

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.sendall(b"\n")
            except (OSError, paramiko.SSHException):
                pass
            self._channel.close()
            self._channel = None


@dataclass
class Segment:
    name: str
    size: int
    closed_at: datetime
    stored: str        # its name in the batch: the segment's, or its .gz's
    stored_size: int
    sha256: str | None  # the segment's own (or the prefix's), when compressed
    local: str = ""    # the file uploaded, in the archive folder (default: `stored`)
    prefix: bool = False  # a CDC segment's durable prefix: `size` bytes, written by `closed_at`

    @classmethod
    def of(cls, record: dict) -> Segment:
        return cls(record["name"], record["size"], _time(record["mtime"]), record["stored"], record["stored_size"],
                   record["sha256"], record["stored"])


def _time(mtime: float) -> datetime:
    return datetime.fromtimestamp(mtime, timezone.utc)


@dataclass
class Batch:
    ref: SetRef
    opened_at: float
    segments: list[Segment] = field(default_factory=list)
    entries: list[FileEntry] = field(default_factory=list)


class NodeShipper:
    """Ships one node's segments until `until`, then seals what it holds and returns."""

    def __init__(self, cluster: CassandraCluster, repository: S3Repository, facts: NodeFacts,
                 snapshot_ts: datetime, cluster_name: str, holder: str, seal_every_s: float = SEAL_EVERY_S):
        self.cluster, self.repository, self.facts = cluster, repository, facts
        self.host = cluster.host(facts.address)
        self.snapshot_ts, self.cluster_name, self.holder = snapshot_ts, cluster_name, holder
        self.seal_every_s = seal_every_s
        self.storage = Storage(repository)
        self.archive_dir = self.host.commitlog_archive_dir.rstrip("/")
        self.queue: list[Segment] = []  # seen, not in any batch yet (oldest first)
        self.batch: Batch | None = None
        self.last_batch: datetime | None = None
        self.point: datetime | None = None
        self.shipped = self.batches = 0
        self.full_checked = time.monotonic()
        self.lag_reported = -LAG_EVENT_EVERY_S
        # CDC: cdc_raw's segments (name → durable offset, completed, index mtime), the prefix staged last
        # of each (offset, monotonic time), and the longest sealed copy of every segment seen.
        self.cdc: dict[str, tuple[int, bool, datetime]] = {}
        self.staged: dict[str, tuple[int, float]] = {}
        self.sealed: dict[str, int] = {}
        self.until = utcnow()

    def run(self, until: datetime) -> dict:
        self.until = until
        self.point = self._previous_point()
        streaming = self.repository.node_upload_refusal() is not None
        with RemoteHost(self.cluster, self.host) as remote:
            properties = posixpath.join(self.host.config_dir, PROPERTIES)
            if problem := archiving_problem(b"".join(remote.iter_file(properties)).decode()):
                raise PermanentError(f"{properties}: {problem}: Cassandra archives no commit-log segment")
            presigner = NodeUpload(remote, self.storage, None)._presigner  # noqa: SLF001 — the same endpoint
            agent = WatchAgent(remote, self.storage, self.archive_dir,
                               self.repository.commitlog_compression == "gzip", probe=not streaming,
                               cdc_dir=self.host.cdc_raw_dir)
            agent.start(presigner.meta.endpoint_url)
            try:
                first = agent.call({"watch": 1.0})
                self._note_cdc(first["cdc"])
                self._resume(first["segments"], agent)
                beat = 0.0
                while utcnow() < until:
                    wait = WATCH_S if self.batch is None else \
                        max(0.0, min(WATCH_S, self.batch.opened_at + self.seal_every_s - time.monotonic()))
                    seen = agent.call({"watch": wait})
                    self._arrived([Segment.of(r) for r in seen["segments"]])
                    self._note_cdc(seen["cdc"])
                    self._stage_prefixes(agent)
                    self._upload_queued(remote, agent, streaming)
                    if self.batch and seal_due(self.batch.opened_at, len(self.batch.segments), time.monotonic(),
                                               self.seal_every_s):
                        self._seal(agent)
                        beat = 0.0
                    if time.monotonic() - beat >= HEARTBEAT_EVERY_S:
                        self._beat()
                        beat = time.monotonic()
                if self.batch:
                    self._seal(agent)
                self._beat()
            finally:
                agent.close()
        return {"host": self.facts.address, "host_id": self.facts.host_id, "segments": self.shipped,
                "batches": self.batches, "unsealed": len(self.queue),
                "recovery_point": format_ts(self.point) if self.point else None}

    def _resume(self, records: list[dict], agent: WatchAgent) -> None:
        """At start: segments a sealed batch already holds (a predecessor died before deleting them)
        are deleted unsent; the rest are queued."""
        seen = [Segment.of(r) for r in records]
        files = [RemoteFile(s.name, s.size, s.closed_at.timestamp()) for s in seen] + \
            [RemoteFile(name, offset, at.timestamp()) for name, (offset, _, at) in self.cdc.items()]
        shipped = already_shipped(self.storage, self.facts.host_id, files, log)
        done, pending = to_ship(((s.name, s.size) for s in seen), shipped)
        by_name = {s.name: s for s in seen}
        if done:
            agent.call({"delete": [n for name in done for n in {name, by_name[name].stored}]})
            log.info("%s: %d segment(s) already in sealed batches, deleted unsent", self.facts.address, len(done))
        self.sealed.update(shipped)
        self._drain(agent)
        self.queue = [by_name[n] for n in pending]
        self.point = recovery_point(self.point, [by_name[n].closed_at for n in done],
                                    [s.closed_at for s in self.queue])

    def _arrived(self, segments: list[Segment]) -> None:
        """Archived segments join the queue; each supersedes a queued prefix of itself."""
        names = {s.name for s in segments}
        self.queue = [q for q in self.queue if not (q.prefix and q.name in names)] + segments

    def _note_cdc(self, entries: list[dict]) -> None:
        for e in entries:
            self.cdc[e["name"]] = (e["offset"], e["completed"], _time(e["mtime"]))

    def _stage_prefixes(self, agent: WatchAgent) -> None:
        """Queues the durable prefix of each CDC segment still written, when due (dmf.core.shipper)."""
        for name, (offset, completed, at) in sorted(self.cdc.items()):
            shipped, staged_at = self.staged.get(name, (0, None))
            if any(q.name == name and not q.prefix for q in self.queue):
                continue  # archived whole meanwhile: that copy supersedes any prefix
            if not prefix_due(offset, max(shipped, self.sealed.get(name, 0)), completed, staged_at, time.monotonic()):
                continue
            answer = agent.call({"prefix": {"name": name, "offset": offset}})
            if "error" in answer:
                log.warning("%s: CDC prefix of %s not staged: %s", self.facts.address, name, answer["error"])
                continue
            self.staged[name] = (offset, time.monotonic())
            prefix = Segment(name, offset, at, name + (".gz" if answer["stored"].endswith(".gz") else ""),
                             answer["stored_size"], answer["sha256"], answer["stored"], prefix=True)
            self.queue = [q for q in self.queue if not (q.prefix and q.name == name)] + [prefix]

    def _drain(self, agent: WatchAgent) -> None:
        """Deletes from cdc_raw what sealed copies hold in full, so that Cassandra's cdc_total_space never
        fills (when it does, writes to CDC tables are refused)."""
        if names := drainable({n: (o, c) for n, (o, c, _) in self.cdc.items()}, self.sealed):
            agent.call({"drain": names})
            for name in names:
                self.cdc.pop(name, None)
                self.staged.pop(name, None)

    def _upload_queued(self, remote: RemoteHost, agent: WatchAgent, streaming: bool) -> None:
        while self.queue:
            check_lease("a commit-log upload")
            if self.batch and any(s.stored == self.queue[0].stored for s in self.batch.segments):
                self._seal(agent)  # a longer copy of a segment in the open batch goes in the next one
            if self.batch is None:
                self._refresh_full()
                self.last_batch = batch_time(utcnow(), self.last_batch)
                self.batch = Batch(SetRef.commitlog(self.snapshot_ts, self.facts.host_id, self.last_batch),
                                   time.monotonic())
            segment = self.queue[0]
            source = SourceFile(f"{self.archive_dir}/{segment.local or segment.stored}", segment.stored,
                                segment.stored_size)
            try:
                entry = self._upload(remote, agent, streaming, source)
            except DmfError as exc:  # tried again at the next turn (the segment stays on the node)
                log.warning("%s: %s not shipped yet: %s", self.facts.address, segment.name, exc)
                return
            self.queue.pop(0)
            self.batch.segments.append(segment)
            self.batch.entries.append(entry)
            if seal_due(self.batch.opened_at, len(self.batch.segments), time.monotonic(), self.seal_every_s):
                self._seal(agent)

    def _upload(self, remote: RemoteHost, agent: WatchAgent, streaming: bool, source: SourceFile) -> FileEntry:
        ref = self.batch.ref
        if streaming:
            return upload_files(self.cluster, self.host, self.storage, ref, [source], resume=False, logger=log)[0]
        helper = NodeUpload(remote, self.storage, ref)
        upload = helper._prepare(source)  # noqa: SLF001 — one file of the set, through this agent
        urls = helper._open(upload)  # noqa: SLF001
        answer = agent.call({"upload": {"path": source.path, "size": source.size, "part_size": upload.part_size,
                                        "urls": urls, "headers": helper._headers(upload)}})  # noqa: SLF001
        if "error" in answer:
            helper._abort(upload)  # noqa: SLF001
            raise RemoteError(f"{self.facts.address}: upload of {source.relpath} failed: {answer['error']}")
        helper._seal(upload, [bytes.fromhex(m) for m in answer["md5s"]], answer["etags"],  # noqa: SLF001
                     answer["sha256"])
        return FileEntry(source.relpath, source.size, answer["sha256"])

    def _seal(self, agent: WatchAgent) -> None:
        batch, self.batch = self.batch, None
        check_lease("sealing a commit-log batch")
        extra: dict = {SEGMENTS_CLOSED_AT: {s.name: format_ts(s.closed_at) for s in batch.segments}}
        compressed = {s.stored: compressed_record(s.name, s.size, s.sha256) for s in batch.segments
                      if s.stored != s.name}
        if compressed:
            extra[SEGMENTS_COMPRESSED] = compressed
        if prefixes := {s.name: s.size for s in batch.segments if s.prefix}:
            extra[SEGMENT_PREFIXES] = prefixes
        try:
            seal_set.fn(self.repository, batch.ref, Uploaded(batch.entries, 0.0, 0.0), self.facts, "",
                        (self.facts.address,), extra=extra, seal_by=seal_deadline(batch.ref.time))
        except PermanentError as exc:  # its segments go again, in a new batch (this one is swept)
            log.warning("%s: %s", self.facts.address, exc)
            self.queue = batch.segments + self.queue
            return
        self.shipped += len(batch.segments)
        self.batches += 1
        # Dies here: the successor finds these segments sealed and deletes them unsent.
        agent.call({"delete": [n for s in batch.segments for n in ({s.local} if s.prefix else {s.name, s.stored})]})
        for s in batch.segments:
            self.sealed[s.name] = max(s.size, self.sealed.get(s.name, 0))
        self._drain(agent)
        self.point = recovery_point(self.point, [s.closed_at for s in batch.segments],
                                    [s.closed_at for s in self.queue])

    def _refresh_full(self) -> None:
        if time.monotonic() - self.full_checked < FULL_EVERY_S:
            return
        full = Repository(self.storage).latest_full_of_each([self.facts.address])[self.facts.address]
        if full is not None and full.snapshot_ts != self.snapshot_ts:
            log.info("%s: batches go under the newer full %s", self.facts.address, format_ts(full.snapshot_ts))
            self.snapshot_ts = full.snapshot_ts
        self.full_checked = time.monotonic()

    def _previous_point(self) -> datetime | None:
        key = heartbeat_key(self.cluster_name, self.facts.host_id)
        try:
            data = self.storage.get_bytes(key, missing_ok=True)
            return None if data is None else Heartbeat.from_json(key, data).recovery_point
        except (DmfError, LayoutError) as exc:
            log.warning("%s: previous heartbeat unreadable: %s", self.facts.address, exc)
            return None

    def _beat(self) -> None:
        beat = Heartbeat(self.facts.address, self.facts.host_id, utcnow(), self.point,
                         len(self.queue) + (len(self.batch.segments) if self.batch else 0), self.holder, self.until)
        try:
            self.storage.put_bytes(heartbeat_key(self.cluster_name, self.facts.host_id), beat.to_json(),
                                   "application/json")
        except DmfError as exc:  # the next beat tries again; status sees it silent meanwhile
            log.warning("%s: heartbeat not written: %s", self.facts.address, exc)
        if (flags := lag_flags(beat.beat_at, beat)) and time.monotonic() - self.lag_reported >= LAG_EVENT_EVERY_S:
            from prefect.events import emit_event
            emit_event("dmf.commitlog.lag-exceeded", payload={"flags": "; ".join(flags)},
                       resource={"prefect.resource.id": f"dmf.node.{self.facts.host_id}",
                                 "prefect.resource.name": self.facts.address})
            self.lag_reported = time.monotonic()
