"""What the product does on a Cassandra node, over the remote layer: nodetool, and the files
of snapshots and incremental backups mapped to their place in the bucket layout."""
from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from dmf.blocks.cassandra_cluster import check_jmx_credentials

from dmf.core.keys import live_folder_of, split_table_dir
from dmf.core.errors import InputError, LayoutError
from dmf.core.targets import SYSTEM_KEYSPACES, DbTarget
from dmf.ssh import CommandResult, RemoteError, RemoteHost, command_argv

RM_BATCH = 200
PASSWORD_FILE_SHOWN = "<one-call password file>"
# nodetool is a short-lived JMX client: C2 compilation and a parallel GC only cost it CPU at start
# (2.1-2.4 s → 1.1-1.4 s of `nodetool version` on the test bed). Appended to the node's own
# JAVA_TOOL_OPTIONS (the JVM honours it whatever the launcher script); a JVM that does not know an
# option ignores it. Not passed through `sudo`, which resets the environment: that nodetool is just slower.
NODETOOL_JAVA_OPTIONS = "-XX:+IgnoreUnrecognizedVMOptions -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

# nodetool with `-pwf <file>`, the file made for this one call: the script runs under `sh -c` (one
# remote command, no extra round trip), reads `<user> <password>` from the SSH channel's stdin into
# an owner-only file (umask 077) in a fresh directory of its own (mktemp -d, 0700), runs nodetool,
# and removes the directory on any exit of the shell: nodetool's success or failure, a refused or
# incomplete stdin, and SIGHUP/SIGINT/SIGTERM/SIGPIPE (each trapped to `exit`, which runs the EXIT
# trap; the shell waits for nodetool to end first). A dropped SSH connection closes the command's
# pipes (sshd sends no signal to a command without a terminal; a SIGHUP would be trapped): nodetool
# ends, and the shell removes the file. SIGPIPE matters there: the shell's own message on a cut
# stdin goes to a closed stderr, and an untrapped SIGPIPE would kill the shell with the file left.
# Not covered, as no shell can: a SIGKILL or a node crash.
#   - just before the removal (nodetool ended, `rm` not yet run): the file stays, 0600 in its 0700
#     `dmf-jmx.*` directory under the SSH user's $TMPDIR (/tmp), until the node's temp cleaning
#     (systemd-tmpfiles, or a reboot for a tmpfs /tmp) or an operator removes it; only that user
#     and root can read it (root can read the JMX server's own password file anyway).
#   - just after it: nothing is left; the caller sees the lost connection as a failed nodetool call
#     (and a task retries it), though the call itself may have done its work.
# A kill between mktemp and the assignment of $d leaves an empty directory, never a password.
# The stdin must end with a newline: a connection dropped mid-write leaves a truncated line, and
# nodetool must then not run (with an unauthenticated JMX it would, unasked).
_JMX_SCRIPT = """\
umask 077
d=
trap '[ -z "$d" ] || rm -rf -- "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE
d=$(mktemp -d "${TMPDIR:-/tmp}/dmf-jmx.XXXXXXXXXX") || exit 125
f="$d/jmxremote.password"
cat > "$f" || exit 125
if [ "$(tail -c 1 "$f" | wc -l)" -ne 1 ]; then
  echo 'dmf: the JMX password file arrived incomplete on stdin; nodetool not run' >&2
  exit 125
fi
"""


def jmx_password_file(username: str, password: str) -> bytes:
    """The content of nodetool's -pwf file: one line `<user> <password>` (whitespace-free, checked)."""
    check_jmx_credentials(username, password)
    return f"{username} {password}\n".encode()


def jmx_password_command(base: list[str], username: str, args: Sequence[str]) -> list[str]:
    """`sh -c <script>`: nodetool as `<base> -u <user> -pwf <file> <args>` with the file made from
    stdin for this call and removed after it (see _JMX_SCRIPT). Every word of base, the user and
    args is quoted inside the script, and the script once more as sh's argument; nodetool's stdin
    is /dev/null (the password was read already; nodetool would prompt on an empty one)."""
    nodetool = f'{shlex.join(base)} -u {shlex.quote(username)} -pwf "$f" {shlex.join(args)}'.rstrip()
    return ["sh", "-c", f"{_JMX_SCRIPT}{nodetool} </dev/null\n"]


def check_snapshot_tag(tag: str) -> None:
    """A tag `find -name` matches as itself: no glob characters, no path."""
    if not tag or any(c in tag for c in "*?[]\\/") or tag.startswith("."):
        raise InputError(f"snapshot tag {tag!r} cannot be removed as a folder name")


def with_java_options(argv: list[str]) -> list[str]:
    """argv (nodetool's) run with NODETOOL_JAVA_OPTIONS after the node's own JAVA_TOOL_OPTIONS."""
    return ["sh", "-c", f'JAVA_TOOL_OPTIONS="${{JAVA_TOOL_OPTIONS:+$JAVA_TOOL_OPTIONS }}{NODETOOL_JAVA_OPTIONS}" '
            'exec "$@"', "nodetool", *argv]


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
        """nodetool on the node; with the cluster block's JMX credentials, as `-u <user> -pwf <file>`
        where the file lives for this one call (see jmx_password_command)."""
        host, cluster = self.host, self.remote.cluster
        plain = command_argv(host.nodetool, "-h", host.jmx_host, "-p", str(host.jmx_port))
        base = with_java_options(plain)
        password = None if cluster.jmx_password is None else cluster.jmx_password.get_secret_value()
        # Checked again here: a block copied with model_copy(update=...) skips its validators.
        check_jmx_credentials(cluster.jmx_username, password)
        if password is None:
            return self.remote.run([*base, *args], timeout=timeout, shown=[*plain, *args])
        return self.remote.run(jmx_password_command(base, cluster.jmx_username, args), timeout=timeout,
                               stdin=jmx_password_file(cluster.jmx_username, password),
                               shown=[*plain, "-u", cluster.jmx_username, "-pwf", PASSWORD_FILE_SHOWN, *args],
                               secrets=[password])

    def snapshot(self, tag: str, target: DbTarget, keyspaces: list[str]) -> None:
        """`nodetool snapshot -t TAG` scoped to the table, the keyspace, or the given keyspaces."""
        self.nodetool("snapshot", "-t", tag, *(target.nodetool_args() or keyspaces))

    def clear_snapshot(self, tag: str) -> None:
        self.nodetool("clearsnapshot", "-t", tag)

    def remove_snapshot(self, tag: str) -> None:
        """What `clearsnapshot -t TAG` does to a snapshot taken without a TTL, without its JVM: removes
        every `<data>/<ks>/<table>/snapshots/TAG` folder (hard links and the snapshot's manifest;
        Cassandra 5.0 lists snapshots from disk and tracks in memory only those with a TTL).
        `clearsnapshot` where the SSH user may not remove them (the SSH user already deletes
        `backups/` files, so it usually may)."""
        check_snapshot_tag(tag)
        result = self.remote.run(["find", *self.host.data_dirs, "-mindepth", "4", "-maxdepth", "4", "-type", "d",
                                  "-name", tag, "-path", "*/snapshots/*", "-prune", "-exec", "rm", "-rf", "--", "{}",
                                  "+"], check=False)
        if result.exit_status != 0:
            self.clear_snapshot(tag)

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

    def _table_files(self, target: DbTarget, live: tuple[str, ...],
                     *wanted: tuple[str, str | None]) -> list[list[SourceFile]]:
        """Per (folder, tag) wanted, the files under `<ks>/<table>-<id>/<folder>/[<tag>/]` of the
        target's tables, in every data dir: one listing of each data dir for them all. Not the
        folder of a table that was dropped and created again under its name (`live`, from
        cql.live_table_folders, names another folder for it): the old one's rows are not the new
        table's, and a restore of the table would bring them back. A dropped table's folder, the
        name no longer in use, still counts (its last flushes reach the next incremental)."""
        live_folder = live_folder_of(live)
        found: list[list[SourceFile]] = [[] for _ in wanted]
        for data_dir in self.host.data_dirs:
            base = posixpath.join(data_dir, target.keyspace) if target.keyspace else data_dir
            for f in self.remote.list_files(base):
                path = posixpath.join(base, f.path)
                # ks / table-id / folder / [tag /] [.index /] file
                parts = posixpath.relpath(path, data_dir).split("/")
                for files, (folder, tag) in zip(found, wanted):
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
                    folder = f"{keyspace}/{table_dir}"
                    if live_folder.get(f"{keyspace}/{table}", folder) != folder:
                        continue  # an earlier table of the same name
                    files.append(SourceFile(path, "/".join([keyspace, table_dir, *inner]), f.size))
        return found

    def snapshot_files(self, tag: str, target: DbTarget, live: tuple[str, ...]) -> list[SourceFile]:
        return self._table_files(target, live, ("snapshots", tag))[0]

    def backup_files(self, target: DbTarget, live: tuple[str, ...]) -> list[SourceFile]:
        return self._table_files(target, live, ("backups", None))[0]

    def snapshot_and_backup_files(self, tag: str, target: DbTarget,
                                  live: tuple[str, ...]) -> tuple[list[SourceFile], list[SourceFile]]:
        """snapshot_files and backup_files from one listing (a remote `find` less)."""
        snapshot, backups = self._table_files(target, live, ("snapshots", tag), ("backups", None))
        return snapshot, backups

    def compress_segments(self, paths: list[str]) -> tuple[dict[str, str], dict[str, int]]:
        """gzip -1 each file beside itself as `<path>.gz`, keeping the file; returns path → the file's
        SHA-256, and `<path>.gz` → its size. `-n` leaves out name and time, so compressing a file again
        gives the same bytes (a retried run finds its upload already there); `-f` replaces what a dead
        run left."""
        sha256s: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for start in range(0, len(paths), RM_BATCH):
            batch = paths[start:start + RM_BATCH]
            # One remote command for all three (round trips less per batch, on the shipping RPO's path);
            # the loop's list is expanded before `set` appends the .gz names, which `shift` then leaves.
            hashed = self.remote.run(["sh", "-c", 'gzip -1 -k -f -n -- "$@" && sha256sum -- "$@" && n=$# && '
                                      'for f do set -- "$@" "$f.gz"; done && shift "$n" && '
                                      'exec stat -c "size %s %n" -- "$@"', "sh", *batch], timeout=3600)
            for line in hashed.stdout.splitlines():
                if line.startswith("size "):
                    _, size, path = line.split(" ", 2)
                    sizes[path] = int(size)
                else:
                    digest, _, path = line.partition("  ")
                    sha256s[path] = digest
        missing = [p for p in paths if p not in sha256s or f"{p}.gz" not in sizes]
        if missing:
            raise RemoteError(f"{self.host.address}: no SHA-256 or compressed size for {missing[0]}")
        return sha256s, sizes

    def delete_files(self, paths: list[str]) -> None:
        for start in range(0, len(paths), RM_BATCH):
            self.remote.run(["rm", "-f", "--", *paths[start:start + RM_BATCH]])
