"""What the product does on a Cassandra node, over the remote layer: nodetool, and the files
of snapshots and incremental backups mapped to their place in the bucket layout."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from dmf.core.keys import split_table_dir
from dmf.core.errors import InputError, LayoutError
from dmf.core.targets import SYSTEM_KEYSPACES, DbTarget
from dmf.ssh import CommandResult, RemoteError, RemoteHost, command_argv

RM_BATCH = 200


@dataclass(frozen=True)
class SourceFile:
    path: str     # absolute path on the node
    relpath: str  # `<ks>/<table>-<id>/[.<index>/]<file>`, its place under the set prefix
    size: int


class Node:
    def __init__(self, remote: RemoteHost):
        self.remote = remote
        self.host = remote.host

    def nodetool(self, *args: str, timeout: float = 3600) -> CommandResult:
        host = self.host
        return self.remote.run(command_argv(host.nodetool, "-h", host.jmx_host, "-p", str(host.jmx_port), *args),
                               timeout=timeout)

    def snapshot(self, tag: str, target: DbTarget, keyspaces: list[str]) -> None:
        """`nodetool snapshot -t TAG` scoped to the table, the keyspace, or the given keyspaces."""
        self.nodetool("snapshot", "-t", tag, *(target.nodetool_args() or keyspaces))

    def clear_snapshot(self, tag: str) -> None:
        self.nodetool("clearsnapshot", "-t", tag)

    def flush(self, target: DbTarget, keyspaces: list[str]) -> None:
        if target.keyspace:
            self.nodetool("flush", *target.keyspace_table_args())
        else:
            for keyspace in keyspaces:
                self.nodetool("flush", keyspace)

    def snapshot_dirs(self) -> list[str]:
        """Every `<data>/<ks>/<table>/snapshots/<tag>` folder on the node."""
        found = []
        for data_dir in self.host.data_dirs:
            result = self.remote.run(["find", data_dir, "-mindepth", "4", "-maxdepth", "4", "-type", "d",
                                      "-path", "*/snapshots/*"], check=False)
            found.extend(line for line in result.stdout.splitlines() if line)
        return found

    def check_data_dirs(self, target: DbTarget, keyspaces: list[str]) -> None:
        """Every keyspace the target names has its folder in a data directory: otherwise the block's
        data_dirs is wrong, and the backup would be a complete set of nothing."""
        for keyspace in [target.keyspace] if target.keyspace else keyspaces:
            if not any(self.remote.is_dir(posixpath.join(d, keyspace)) for d in self.host.data_dirs):
                raise InputError(f"{self.host.address}: no folder for keyspace {keyspace} in the data "
                                 f"directories {', '.join(self.host.data_dirs)} (check the cluster block's data_dirs)")

    def _table_files(self, target: DbTarget, folder: str, tag: str | None = None) -> list[SourceFile]:
        """Files under `<ks>/<table>-<id>/<folder>/[<tag>/]` of the target's tables, in every data dir."""
        found: list[SourceFile] = []
        for data_dir in self.host.data_dirs:
            base = posixpath.join(data_dir, target.keyspace) if target.keyspace else data_dir
            for f in self.remote.list_files(base):
                path = posixpath.join(base, f.path)
                # ks / table-id / folder / [tag /] [.index /] file
                parts = posixpath.relpath(path, data_dir).split("/")
                head, inner = parts[:3], parts[3:]
                if tag is not None:
                    if not inner or inner[0] != tag:
                        continue
                    inner = inner[1:]
                if len(head) < 3 or head[2] != folder or not inner or len(inner) > 2:
                    continue
                if len(inner) == 2 and not inner[0].startswith("."):
                    continue  # an index's own folder is the only legal nesting
                keyspace, table_dir = head[0], head[1]
                try:
                    table, _ = split_table_dir(table_dir)
                except LayoutError:
                    continue
                if keyspace in SYSTEM_KEYSPACES or not target.covers(keyspace, table):
                    continue
                found.append(SourceFile(path, "/".join([keyspace, table_dir, *inner]), f.size))
        return found

    def snapshot_files(self, tag: str, target: DbTarget) -> list[SourceFile]:
        return self._table_files(target, "snapshots", tag)

    def backup_files(self, target: DbTarget) -> list[SourceFile]:
        return self._table_files(target, "backups")

    def compress_segments(self, paths: list[str]) -> dict[str, str]:
        """gzip -1 each file beside itself as `<path>.gz`, keeping the file; returns path → the file's
        SHA-256. `-n` leaves out name and time, so compressing a file again gives the same bytes (a
        retried run finds its upload already there); `-f` replaces what a dead run left."""
        sha256s: dict[str, str] = {}
        for start in range(0, len(paths), RM_BATCH):
            batch = paths[start:start + RM_BATCH]
            self.remote.run(["gzip", "-1", "-k", "-f", "-n", "--", *batch], timeout=3600)
            for line in self.remote.run(["sha256sum", "--", *batch], timeout=3600).stdout.splitlines():
                digest, _, path = line.partition("  ")
                sha256s[path] = digest
        missing = [p for p in paths if p not in sha256s]
        if missing:
            raise RemoteError(f"{self.host.address}: no SHA-256 for {missing[0]} from sha256sum")
        return sha256s

    def delete_files(self, paths: list[str]) -> None:
        for start in range(0, len(paths), RM_BATCH):
            self.remote.run(["rm", "-f", "--", *paths[start:start + RM_BATCH]])
