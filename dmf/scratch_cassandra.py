"""Point-in-time replay in a throwaway one-node Cassandra the worker starts (issue 25): the production
nodes are never restarted and their files never touched.

The scratch node runs the nodes' own Cassandra version from Maven Central's jars (cached as the test
bed's are), on loopback ports of its own, with every folder under PATH/scratch-cassandra. It is
started once empty and given the target tables with their original IDs, then once per source node
with that node's shipped segments as restore_directories, `restore_point_in_time` at --time and
`-Dcassandra.replayList` naming the target tables: Cassandra's own replay applies every mutation up to
that second (deletes, TTLs, range tombstones, collections, counters as on a node) and flushes them.
After each start the flushed SSTables are moved out of its data folder: Cassandra would otherwise
count them as covering its commit log and skip the next node's older segments. At the end the
SSTables are linked into one <keyspace>/<table> folder per target, for sstableloader.

Once every start is done, only the replayed SSTables stay (PATH/scratch-cassandra/replayed/), made
durable, and then, last, a record of what they were made from (core.scratch.replay_inputs): a rerun
of the restore for the same segments, time, version, schema and tables reuses them instead of
replaying again (the load into the cluster failed, say); anything else, or no record, and the folder
is removed and the replay made again.

Crashes: the node runs with PR_SET_PDEATHSIG, so it dies with the worker; its pid file lets the next
run stop one that outlived it anyway. A replay starts from an empty scratch folder (only the fetched
segments in PATH/cassandra_commitlogs/ are reused), its record removed first, so a replay cut short
never leaves one; the folder is removed on failure, and after the load unless the files are kept.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath

from dmf import cassandra_jvm, procs
from dmf.core.errors import DmfError, InputError
from dmf.core.scratch import (REPLAY_RECORD, Layout, Ports, Reuse, batches, check_ports, load_names,
                              replay_list_option, replay_record, reusable, scratch_yaml, segments_read)
from dmf.download import write_private
from dmf.replay import check_filter_reached, replay_properties

PROPERTIES = "commitlog_archiving.properties"
_REPLAYED = re.compile(r"Log replay complete, (\d+) replayed mutations")
START_TIMEOUT_S = 600


class ScratchError(DmfError):
    pass


def require_java() -> str:
    """One clear line, before anything is downloaded, when the worker has no JVM."""
    found = cassandra_jvm.java()
    if found is None:
        raise InputError("the point-in-time replay runs a scratch Cassandra on this worker, which needs Java 17 "
                         "(`java` on PATH): install it, or replay on the nodes with --replay-on nodes")
    return found


def cache_dir() -> Path:
    """Cassandra's jars for the scratch node: DMF_CACHE_DIR (the test bed's cache too), else ~/.cache/dmf."""
    return Path(os.environ.get("DMF_CACHE_DIR") or Path.home() / ".cache" / "dmf").resolve()


def free_ports(count: int = 3) -> list[int]:
    """Ports the kernel has free on loopback now (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def available_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _die_with_parent() -> None:
    """The scratch JVM gets SIGKILL if the worker thread that started it dies (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ScratchNode:
    def __init__(self, root: Path, version: str, taken_ports: set[int], heap_mib: int):
        self.layout = Layout.under(str(root))
        self.home = Path(self.layout.home)
        self.java = require_java()
        self.lib = cassandra_jvm.ensure_jars(cache_dir(), version)
        self.ports = check_ports(Ports(*free_ports()), taken_ports)
        self.heap_mib = heap_mib

    def path(self, *parts: str) -> Path:
        return Path(self.layout.dir(*parts))

    @property
    def pid_file(self) -> Path:
        return self.path("cassandra.pid")

    @property
    def system_log(self) -> Path:
        return self.path("logs") / "system.log"

    def prepare(self) -> None:
        """A fresh folder: whatever an earlier run left (its node stopped first) is removed."""
        remove_leftovers(self.home)
        for name in ("conf", "data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs"):
            self.path(name).mkdir(parents=True, exist_ok=True)
        conf = self.path("conf")
        (conf / "cassandra.yaml").write_text(scratch_yaml(self.layout, self.ports, self.heap_mib))
        (conf / "logback.xml").write_text(cassandra_jvm.LOGBACK)
        (conf / PROPERTIES).write_text("")

    def start(self, options: list[str]) -> int:
        """Starts it and waits until it serves CQL; returns the system log's size before the start."""
        offset = self.system_log.stat().st_size if self.system_log.exists() else 0
        argv = cassandra_jvm.server_argv(self.java, self.lib, self.path("conf"), self.home, self.path("logs"),
                                         f"{self.heap_mib}m", self.ports.jmx, options)
        with open(self.path("logs") / "stdout.log", "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_parent)
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not procs.port_open("127.0.0.1", self.ports.native):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ScratchError(f"the scratch Cassandra {'exited' if process.poll() is not None else 'hung'} "
                                   f"during start-up; last lines of {self.system_log}:\n"
                                   f"{procs.log_tail(self.system_log, 15)}")
            time.sleep(0.5)
        return offset

    def log_since(self, offset: int) -> str:
        with open(self.system_log, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (Cassandra drains: memtables flushed), SIGKILL after a minute."""
        procs.stop(self.pid_file, marker=str(self.home))

    def create_schema(self, statements: list[str]) -> None:
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import RoundRobinPolicy
        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
        cluster = Cluster(["127.0.0.1"], port=self.ports.native, protocol_version=5,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        try:
            session = cluster.connect()
            for statement in statements:
                session.execute(statement, timeout=120)
        finally:
            cluster.shutdown()


def remove_leftovers(home: Path) -> None:
    """A scratch node an earlier run left running (its pid file names it, its command line holds the
    folder) is stopped, and the folder removed: its replay record first, so a removal cut short leaves
    no output a rerun would take as complete."""
    if home.exists():
        (home / REPLAY_RECORD).unlink(missing_ok=True)
        procs.stop(home / "cassandra.pid", marker=str(home))
        shutil.rmtree(home)


def _move_sstables(node: ScratchNode, tables: list[str], host_id: str) -> list[Path]:
    moved = []
    for table in tables:
        keyspace, name = table.split(".")
        for folder in node.path("data", keyspace).glob(f"{name}-*"):
            out = Path(node.layout.replayed(host_id, keyspace, name))
            out.mkdir(parents=True, exist_ok=True)
            for file in folder.iterdir():
                if file.is_file():
                    file.rename(out / file.name)
                    moved.append(out / file.name)
    return moved


def replay(root: Path, version: str, schema: list[str], tables: list[str], segments: list[Path], at: datetime,
           taken_ports: set[int], heap_mib: int, inputs: dict, progress: Callable[[str, dict], None]
           ) -> dict[str, dict]:
    """Replays every source node's segments up to `at` into `tables` of a scratch node, keeps their
    SSTables alone and records them as made from `inputs`; returns per source node (host ID) its
    segments, mutations and seconds."""
    node = ScratchNode(root, version, taken_ports, heap_mib)
    nodes: dict[str, dict] = {}
    try:
        node.prepare()
        node.start([])
        node.create_schema(schema)
        node.stop()
        for host_id, listed in batches([PurePosixPath(p) for p in segments]).items():
            started = time.monotonic()
            restore_dir = node.path("segments", host_id)
            restore_dir.mkdir(parents=True)
            for segment in listed:
                os.link(segment, restore_dir / segment.name)
            (node.path("conf") / PROPERTIES).write_text(replay_properties("", str(restore_dir), at))
            offset = node.start([replay_list_option(tables)])
            node.stop()
            log = node.log_since(offset)
            check_filter_reached(log, tables, f"scratch Cassandra (segments of {host_id})")
            counts = [int(n) for n in _REPLAYED.findall(log)]
            if not counts:
                raise ScratchError(f"segments of {host_id}: no 'Log replay complete' line in "
                                   f"{root / 'scratch-cassandra-system.log'}")
            shutil.rmtree(restore_dir)
            _move_sstables(node, tables, host_id)
            names = {s.name for s in listed}
            read = segments_read(log) & names
            if read != names:
                raise ScratchError(f"segments of {host_id}: Cassandra read {len(read)} of the {len(names)} restored "
                                   f"(not: {', '.join(sorted(names - read)[:3])}); see "
                                   f"{root / 'scratch-cassandra-system.log'}")
            nodes[host_id] = {"segments": len(listed), "segments_read": len(read),
                              "mutations": sum(counts), "seconds": round(time.monotonic() - started, 1)}
            progress(host_id, nodes[host_id])
        keep_only_replayed(node.home)
        write_record(node.layout, inputs, nodes)
    except BaseException:
        keep_log(node, root)
        remove_leftovers(node.home)
        raise
    return nodes


def keep_only_replayed(home: Path) -> None:
    """The stopped node's own folders (its system tables, its commit log's preallocated segments, its
    logs) go once every start is done: a kept replay holds its SSTables alone."""
    for entry in home.iterdir():
        if entry.name != "replayed":
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def replayed_files(layout: Layout) -> dict[str, int]:
    """The regular files below `replayed/` (path relative to it → size); no link is followed."""
    base = Path(layout.dir("replayed"))
    found = {}
    for folder, _, names in os.walk(base):
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(info.st_mode):
                found[os.path.relpath(os.path.join(folder, name), base)] = info.st_size
    return found


def _fsync(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_record(layout: Layout, inputs: dict, nodes: dict[str, dict]) -> None:
    """The replayed SSTables and their folders flushed to disk, then the record, written last (a
    `.part` renamed over): a crash before the rename leaves no record, and a rerun replays again."""
    base = Path(layout.dir("replayed"))
    files = replayed_files(layout)
    for name in files:
        _fsync(str(base / name))
    for folder, _, _ in os.walk(base):
        _fsync(folder, os.O_DIRECTORY)
    write_private(Path(layout.record), replay_record(inputs, nodes, files))


def previous_replay(root: Path, inputs: dict) -> Reuse:
    """Whether PATH holds a complete replay made from exactly `inputs` (core.scratch.reusable)."""
    layout = Layout.under(str(root))
    try:
        record = Path(layout.record).read_text()
    except FileNotFoundError:
        record = None
    return reusable(record, inputs, replayed_files(layout) if record is not None else {})


def replayed_loads(root: Path, tables: list[str], targets: dict[str, str]
                   ) -> list[tuple[str, str, list[tuple[Path, str]]]]:
    """Per target table (`targets`: replayed table → target table), the replayed SSTables of every
    source node under the names they are loaded by."""
    replayed = Path(Layout.under(str(root)).dir("replayed"))
    loads = []
    for table in tables:
        keyspace, name = table.split(".")
        files = sorted(PurePosixPath(p) for p in replayed.glob(f"*/{keyspace}/{name}/*"))
        target_keyspace, target_table = targets[table].split(".")
        loads.append((target_keyspace, target_table, [(Path(str(p)), new) for p, new in load_names(files)]))
    return loads


def keep_log(node: ScratchNode, root: Path) -> None:
    """The scratch node's log outlives its folder: PATH/scratch-cassandra-system.log, for the operator."""
    if node.system_log.exists():
        shutil.copyfile(node.system_log, root / "scratch-cassandra-system.log")
