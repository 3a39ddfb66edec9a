"""The node path of a restore, decided before any byte moves (pure): which node fetches which
files into its staging folder, what each node then imports, whether the ring can take that (the same
tokens as the backup's hosts; else the nodes load with sstableloader, dmf.core.node_load), whether
each node has the room, and the ETA shown while it runs."""
from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dmf.core.manifest import PlainFile


# The components nodetool import takes from a table folder; others (manifest.json, schema.cql, a
# secondary index's SSTables in .<index>/, rebuilt by the import) are not data to place.
SSTABLE_SUFFIXES = ("-Data.db", "-Index.db", "-Summary.db", "-Filter.db", "-Statistics.db", "-CompressionInfo.db",
                    "-Digest.crc32", "-TOC.txt", "-CRC.db", "-Partitions.db", "-Rows.db")
# Under the staging folder: the hard links nodetool import moves into the data directories, so the
# verified downloads stay for a rerun (resume) until the restore succeeds.
IMPORT_DIR = ".import"


class FetchLike(Protocol):
    key: str
    dest: Path
    size: int
    sha256: str
    plain: PlainFile | None


class UnitLike(Protocol):
    host: str
    set_name: str
    keyspace: str
    table: str
    directory: Path


@dataclass(frozen=True)
class NodeFile:
    key: str
    path: str     # below the node's staging folder: <snapshot>/<host>/<set>/<ks>/<table>/<file>
    size: int     # of the stored object, and its SHA-256
    sha256: str
    plain: PlainFile | None = None  # client-side encrypted: what the node decrypts it to (the staged file)

    @classmethod
    def of(cls, fetch: FetchLike, path: str) -> NodeFile:
        return cls(fetch.key, path, fetch.size, fetch.sha256, fetch.plain)

    @property
    def staged_size(self) -> int:
        return self.size if self.plain is None else self.plain.size


@dataclass(frozen=True)
class StagedUnit:
    """One table set staged on its node: `directory` (below the staging folder) holds `names`."""

    keyspace: str
    table: str
    directory: str
    names: tuple[str, ...]
    label: str

    @property
    def import_directory(self) -> str:
        return posixpath.join(IMPORT_DIR, self.directory)


@dataclass(frozen=True)
class NodeShare:
    """What one node fetches, then loads: its own table sets by nodetool import (`units`), or, into
    another topology, SSTables of any host streamed by one sstableloader per table (`tables`,
    dmf.core.node_load)."""

    host: str
    files: tuple[NodeFile, ...]
    units: tuple[StagedUnit, ...] = ()
    tables: tuple = ()

    @property
    def bytes(self) -> int:
        """What the node fetches from S3."""
        return sum(f.size for f in self.files)

    @property
    def staged_bytes(self) -> int:
        """What the node's staging folder holds once fetched (client-side encrypted files decrypted)."""
        return sum(f.staged_size for f in self.files)


def node_shares(fetches: Sequence[FetchLike], units: Iterable[UnitLike], root: Path) -> dict[str, NodeShare]:
    """Each backup host's files as its node stages them (the paths the worker path would use below
    PATH, below the node's staging folder instead), and its units in load order."""
    files: dict[str, list[NodeFile]] = {}
    names: dict[Path, list[str]] = {}
    for fetch in fetches:
        relative = fetch.dest.relative_to(root)
        files.setdefault(relative.parts[1], []).append(NodeFile.of(fetch, relative.as_posix()))
        if fetch.dest.name.endswith(SSTABLE_SUFFIXES):
            names.setdefault(fetch.dest.parent, []).append(fetch.dest.name)
    staged: dict[str, list[StagedUnit]] = {}
    for unit in units:
        staged.setdefault(unit.host, []).append(StagedUnit(
            unit.keyspace, unit.table, unit.directory.relative_to(root).as_posix(),
            tuple(sorted(names.get(unit.directory, ()))), f"{unit.host} {unit.set_name} {unit.keyspace}.{unit.table}"))
    return {host: NodeShare(host, tuple(files.get(host, ())), tuple(staged.get(host, ())))
            for host in sorted(files.keys() | staged.keys())}


def token_mismatches(backup_tokens: Mapping[str, Sequence[str]], ring_tokens: Mapping[str, Sequence[str]]) -> list[str]:
    """Backup hosts whose node in this ring (by address) does not own exactly the tokens it owned
    at the backup: their files are not that node's share, so it cannot import them as they are."""
    problems = []
    for host, tokens in sorted(backup_tokens.items()):
        now = ring_tokens.get(host)
        if now is None:
            problems.append(f"{host} is not in this ring")
        elif sorted(now, key=int) != sorted(tokens, key=int):
            problems.append(f"{host} owns other tokens now")
    return problems


def node_import_refusal(backup_tokens: Mapping[str, Sequence[str]], ring_tokens: Mapping[str, Sequence[str]],
                        hosts: Iterable[str]) -> str | None:
    """Why the nodes cannot each import their own backup host's files (None: they can): the ring must
    own the backup's tokens and HOSTS name every such host. --mode node then loads with sstableloader
    on the nodes (dmf.core.node_load)."""
    if problems := token_mismatches(backup_tokens, ring_tokens):
        return f"the ring does not own the backup's tokens ({'; '.join(problems)})"
    if missing := sorted(set(backup_tokens) - set(hosts)):
        return f"HOSTS leave out {', '.join(missing)}, whose files must load somewhere"
    return None


def node_fetch_refusal(encrypted: bool, sse: str | None, sse_c_key_on_nodes: bool,
                       decrypt_on_nodes: bool = False) -> str | None:
    """Why no node may fetch its files itself, whatever it could: it would need a key that opens every
    backup, which the repository keeps off the nodes. The worker path then serves every node (its bytes
    pass through the worker)."""
    if encrypted and not decrypt_on_nodes:
        return "the backup is encrypted client-side and the key stays on the worker (decrypt_on_nodes is off)"
    if sse == "SSE-C" and not sse_c_key_on_nodes:
        return "sse: SSE-C keeps the customer key on the worker (sse_c_key_on_nodes is off)"
    return None


@dataclass(frozen=True)
class Room:
    """What a node's preflight found: bytes free where its staging folder is, and bytes of its
    share already there at the right size (kept if their SHA-256 matches too)."""

    free: int
    present: int


def disk_shortfalls(rooms: Mapping[str, Room], shares: Mapping[str, NodeShare]) -> list[str]:
    """The nodes without room for the part of their share still to stage. The import moves hard
    links of the staged files, so the share costs its staged size once."""
    return [f"{host} has {room.free / 2**30:.2f} GiB free for its staging folder and needs "
            f"{(shares[host].staged_bytes - room.present) / 2**30:.2f} GiB"
            for host, room in sorted(rooms.items()) if room.free < shares[host].staged_bytes - room.present]


def worker_fetches(fetches: Sequence[FetchLike], fallback_shares: Iterable[NodeShare], root: Path) -> list:
    """What the worker itself downloads: the files of the fallback nodes' shares, and every schema.cql
    (a few KiB, read on the worker when the backup has no schema of its own)."""
    fallback = {f.path for share in fallback_shares for f in share.files}
    return [f for f in fetches if f.dest.relative_to(root).as_posix() in fallback or f.dest.name == "schema.cql"]


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before any byte or time has gone by."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)
