"""Point-in-time recovery with Cassandra's own commit-log restore, one node at a time.

On each node: place its archived segments in a restore directory, drain and stop it, point
commitlog_archiving.properties at them (restore_point_in_time = --time, to the second), start it
with -Dcassandra.replayList=<the target's tables>, wait until it serves, read how many mutations
it replayed, and put the properties file back as it was, whatever happened.
"""
from __future__ import annotations

import io
import posixpath
import re
import time
from datetime import datetime
from pathlib import Path

from dmf.core.errors import DmfError
from dmf.core.timestamps import format_ts
from dmf.node import Node
from dmf.ssh import RemoteHost, command_argv

PROPERTIES = "commitlog_archiving.properties"
_REPLAYED = re.compile(r"Log replay complete, (\d+) replayed mutations")
_RESTORE_KEYS = ("restore_command", "restore_directories", "restore_point_in_time", "precision")


class ReplayError(DmfError):
    pass


def restore_point(at: datetime) -> str:
    """commitlog_archiving.properties' format: yyyy:MM:dd HH:mm:ss, GMT."""
    return at.strftime("%Y:%m:%d %H:%M:%S")


def replay_properties(original: str, restore_dir: str, at: datetime) -> str:
    """The node's properties with the restore keys set (its archive_command is kept)."""
    kept = [line for line in original.splitlines() if line.split("=", 1)[0].strip() not in _RESTORE_KEYS]
    return "\n".join([*kept, "restore_command=/bin/cp -f %from %to", f"restore_directories={restore_dir}",
                      f"restore_point_in_time={restore_point(at)}", "precision=MICROSECONDS", ""])


def _read(remote: RemoteHost, path: str) -> str:
    return b"".join(remote.iter_file(path)).decode()


def _wait_serving(node: Node, address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = node.nodetool("status", timeout=60).stdout
            if any(line.split()[:2] == ["UN", address] for line in status.splitlines() if line.strip()):
                return
        except DmfError:
            pass
        time.sleep(2)
    raise ReplayError(f"{address} did not come back UN within {timeout:.0f}s after the replay restart")


def replay_on_host(remote: RemoteHost, segments: list[Path], tables: list[str], at: datetime,
                   timeout: float = 600) -> int:
    """Rolling-restart step for one node; returns the mutations Cassandra reports replayed."""
    host = remote.host
    node = Node(remote)
    restore_dir = posixpath.join(host.restore_staging_dir, f"commitlogs-{format_ts(at)}")
    properties = posixpath.join(host.config_dir, PROPERTIES)
    remote.run(["rm", "-rf", "--", restore_dir])
    remote.run(["mkdir", "-p", "--", restore_dir])
    for segment in segments:
        with open(segment, "rb") as source:
            remote.write_file(posixpath.join(restore_dir, segment.name), source)
    original = _read(remote, properties)
    log_offset = remote.stat(host.system_log).st_size if remote.is_file(host.system_log) else 0

    node.nodetool("drain")
    remote.run(command_argv(host.stop_command), timeout=timeout)
    try:
        remote.write_file(properties, io.BytesIO(replay_properties(original, restore_dir, at).encode()))
        replay_list = "-Dcassandra.replayList=" + ",".join(tables)
        remote.run(["env", f"JVM_EXTRA_OPTS={replay_list}", *command_argv(host.start_command)], timeout=timeout)
        _wait_serving(node, host.address, timeout)
    finally:
        # Left in place, the restore keys would replay again at every restart.
        remote.write_file(properties, io.BytesIO(original.encode()))
        remote.run(["rm", "-rf", "--", restore_dir], check=False)
    log_tail = remote.run(["tail", "-c", f"+{log_offset + 1}", "--", host.system_log]).stdout
    counts = [int(n) for n in _REPLAYED.findall(log_tail)]
    if not counts:
        raise ReplayError(f"{host.address}: no 'Log replay complete' line in the {len(log_tail)} bytes "
                          f"{host.system_log} gained after byte {log_offset} during the restart")
    return sum(counts)


