"""Point-in-time recovery with Cassandra's own commit-log restore, one node at a time.

On each node: place its archived segments in a restore directory, drain and stop it, point
commitlog_archiving.properties at them (restore_point_in_time = --time, to the second), start it
with -Dcassandra.replayList=<the target's tables>, wait until it serves, read how many mutations
it replayed, and put the properties file back as it was, whatever happened.

Both files are replaced whole (RemoteHost.replace_file: a temporary file renamed over them), never
rewritten in place, and their plain contents are saved beside them (`<file>.dmf-orig`) before the
node is drained, until it serves again with them put back. A run killed at any step leaves each
file whole, and the next run (or finish_interrupted) puts back the saved originals, never a live
file that may hold the replay's settings.
"""
from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from dmf.core.errors import DmfError
from dmf.core.timestamps import format_ts
from dmf.node import Node
from dmf.ssh import RemoteHost, command_argv

PROPERTIES = "commitlog_archiving.properties"
ORIGINAL_SUFFIX = ".dmf-orig"
_REPLAYED = re.compile(r"Log replay complete, (\d+) replayed mutations")
_RESTORE_KEYS = ("restore_command", "restore_directories", "restore_point_in_time", "precision")
REPLAY_LIST = "-Dcassandra.replayList"
REPLAY_MARKER = "# dmf: point-in-time replay, for one start; removed when it ends"
# What CommitLogReplayer.ReplayFilter logs at start-up (Cassandra 5.0), with and without a replay list.
_FILTERED = "Tables to be replayed:"
_ALL_TABLES = "All tables will be included in commit log replay"
_FILTER_MAP = re.compile(r"(\w+)=\[([^\]]*)\]")


class ReplayError(DmfError):
    pass


def restore_point(at: datetime) -> str:
    """commitlog_archiving.properties' format: yyyy:MM:dd HH:mm:ss, GMT."""
    return at.strftime("%Y:%m:%d %H:%M:%S")


def without_restore_keys(properties: str) -> str:
    """The node's properties as they are outside a replay (a killed run may have left the keys)."""
    kept = [line for line in properties.splitlines() if line.split("=", 1)[0].strip() not in _RESTORE_KEYS]
    return "\n".join(kept) + "\n" if kept else ""


def replay_properties(original: str, restore_dir: str, at: datetime) -> str:
    """The node's properties with the restore keys set (its archive_command is kept)."""
    return without_restore_keys(original) + "\n".join([
        "restore_command=/bin/cp -f %from %to", f"restore_directories={restore_dir}",
        f"restore_point_in_time={restore_point(at)}", "precision=MICROSECONDS", ""])


def without_replay_option(jvm_options: str) -> str:
    """The node's JVM options file without dmf's replay lines (the marker and the option after it)."""
    lines, kept = jvm_options.splitlines(keepends=True), []
    skip_option = False
    for line in lines:
        if line.rstrip("\n") == REPLAY_MARKER:
            skip_option = True
            continue
        if skip_option and line.startswith(f"{REPLAY_LIST}="):
            skip_option = False
            continue
        skip_option = False
        kept.append(line)
    return "".join(kept)


def with_replay_option(jvm_options: str, tables: list[str]) -> str:
    """The file with the replay list for one start: a line of its own (options files allow no
    trailing comment), after a marker that lets any later run find and remove it."""
    base = without_replay_option(jvm_options)
    if base and not base.endswith("\n"):
        base += "\n"
    return f"{base}{REPLAY_MARKER}\n{REPLAY_LIST}={','.join(tables)}\n"


def check_filter_reached(log_tail: str, tables: list[str], address: str) -> None:
    """Cassandra names the replay filter it read at start-up; without ours it replays every table,
    which could bring back rows of tables nobody asked to restore."""
    if _ALL_TABLES in log_tail or _FILTERED not in log_tail:
        raise ReplayError(f"{address}: the replay filter did not reach Cassandra (its log says "
                          f"{'every table was replayed' if _ALL_TABLES in log_tail else 'no replay filter'}); "
                          "check that the node's start reads the cluster block's jvm_options_file")
    named = log_tail.split(_FILTERED, 1)[1].splitlines()[0].strip()
    # Logged as the keyspace → tables map: {ks=[t, u], other=[v]}
    taken = {f"{ks}.{t.strip()}" for ks, listed in _FILTER_MAP.findall(named) for t in listed.split(",")}
    missing = [t for t in tables if t not in taken]
    if missing:
        raise ReplayError(f"{address}: Cassandra's replay filter ({named}) lacks {', '.join(missing)}")


def _read(remote: RemoteHost, path: str) -> str:
    return b"".join(remote.iter_file(path)).decode()


def plain_config(saved: str | None, live: str | None, strip: Callable[[str], str]) -> str | None:
    """A config file as it is outside a replay: its saved original when a killed run left one (the live
    file may be the replay's), else the live file; either stripped of what an older dmf left in it.
    None: the node has no such file."""
    found = saved if saved is not None else live
    return None if found is None else strip(found)


def _keep_original(remote: RemoteHost, path: str, strip: Callable[[str], str]) -> str | None:
    """The plain contents of `path`, saved beside it (whole, with its owner and mode) unless a killed
    run saved them already. Dies before the save: nothing changed yet; after: the save is whole."""
    saved = path + ORIGINAL_SUFFIX
    plain = plain_config(_read(remote, saved) if remote.is_file(saved) else None,
                         _read(remote, path) if remote.is_file(path) else None, strip)
    if plain is not None and not remote.is_file(saved):
        remote.replace_file(saved, plain.encode(), like=path)
    return plain


def _drop_originals(remote: RemoteHost, *paths: str) -> None:
    """Once the node serves with its plain files back. Dies before: the next run finds the saved
    originals, equal to the live files, and uses them."""
    remote.run(["rm", "-f", "--", *(p + ORIGINAL_SUFFIX for p in paths)])


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


def restore_dir_of(host, at: datetime) -> str:
    return posixpath.join(host.restore_staging_dir, f"commitlogs-{format_ts(at)}")


def log_size(remote: RemoteHost) -> int:
    log = remote.host.system_log
    return remote.stat(log).st_size if remote.is_file(log) else 0


def replay_on_host(remote: RemoteHost, segments: list[Path], tables: list[str], at: datetime,
                   on_restart: Callable[[int], None], timeout: float = 600) -> int:
    """Rolling-restart step for one node; returns the mutations Cassandra reports replayed.

    The replay list goes into the node's JVM options file, which every packaging reads at start
    (systemd passes no environment), and Cassandra's log must show it took it. Whatever happens
    after the drain, the properties and the options file are put back as they were outside a
    replay (also stripping what a killed earlier run left), and a node left stopped is started."""
    host = remote.host
    node = Node(remote)
    restore_dir = restore_dir_of(host, at)
    properties, jvm_options = posixpath.join(host.config_dir, PROPERTIES), host.jvm_options_path
    remote.run(["rm", "-rf", "--", restore_dir])
    remote.run(["mkdir", "-p", "--", restore_dir])
    for segment in segments:
        with open(segment, "rb") as source:
            remote.write_file(posixpath.join(restore_dir, segment.name), source)
    plain_properties = _keep_original(remote, properties, without_restore_keys)
    if plain_properties is None:
        raise ReplayError(f"{host.address}: no {properties}: is the cluster block's config_dir right?")
    plain_jvm = _keep_original(remote, jvm_options, without_replay_option)
    log_offset = log_size(remote)

    # Dies before the drain: nothing changed. Dies after: the node is drained, stopped or replaying,
    # its files may hold the replay keys; the next run finishes it (finish_interrupted) first.
    on_restart(log_offset)
    try:
        node.nodetool("drain")
        remote.run(command_argv(host.stop_command), timeout=timeout)
        remote.replace_file(properties, replay_properties(plain_properties, restore_dir, at).encode())
        remote.replace_file(jvm_options, with_replay_option(plain_jvm or "", tables).encode())
        remote.run(command_argv(host.start_command), timeout=timeout)
        _wait_serving(node, host.address, timeout)
    except BaseException:
        _put_back(remote, properties, plain_properties, jvm_options, plain_jvm, restore_dir)
        _start_if_down(remote, node, timeout)
        raise  # the saved originals stay: the node may not be back
    _put_back(remote, properties, plain_properties, jvm_options, plain_jvm, restore_dir)
    _drop_originals(remote, properties, jvm_options)
    log_tail = _log_since(remote, log_offset)
    check_filter_reached(log_tail, tables, host.address)
    counts = [int(n) for n in _REPLAYED.findall(log_tail)]
    if not counts:
        raise ReplayError(f"{host.address}: no 'Log replay complete' line in the {len(log_tail)} bytes "
                          f"{host.system_log} gained after byte {log_offset} during the restart")
    return sum(counts)


def _log_since(remote: RemoteHost, offset: int) -> str:
    return remote.run(["tail", "-c", f"+{offset + 1}", "--", remote.host.system_log]).stdout


def finish_interrupted(remote: RemoteHost, tables: list[str], at: datetime, log_offset: int,
                       timeout: float = 600) -> int | None:
    """A node whose replay restart the manager did not see end: its files are put back to plain,
    it is brought back if down or drained, and its log tells whether it replayed (the mutations)
    or not (None: replay it again)."""
    host = remote.host
    node = Node(remote)
    properties, jvm_options = posixpath.join(host.config_dir, PROPERTIES), host.jvm_options_path
    plain_properties = _keep_original(remote, properties, without_restore_keys)
    if plain_properties is None:
        raise ReplayError(f"{host.address}: no {properties} nor its saved original {ORIGINAL_SUFFIX}")
    _put_back(remote, properties, plain_properties, jvm_options,
              _keep_original(remote, jvm_options, without_replay_option), restore_dir_of(host, at))
    _start_if_down(remote, node, timeout)
    _wait_serving(node, host.address, timeout)
    _drop_originals(remote, properties, jvm_options)
    log_tail = _log_since(remote, log_offset)
    counts = [int(n) for n in _REPLAYED.findall(log_tail)]
    if not counts or _FILTERED not in log_tail:
        return None
    check_filter_reached(log_tail, tables, host.address)
    return sum(counts)


def _put_back(remote: RemoteHost, properties: str, plain_properties: str, jvm_options: str,
              plain_jvm: str | None, restore_dir: str) -> None:
    """Left in place, the restore keys and the replay list would apply again at every restart.
    `plain_jvm` None: the node had no options file, and has none again. Each file is replaced whole:
    dies between the two, the saved originals put back the other next time."""
    remote.replace_file(properties, plain_properties.encode())
    if plain_jvm is not None:
        remote.replace_file(jvm_options, plain_jvm.encode())
    else:
        remote.run(["rm", "-f", "--", jvm_options])
    remote.run(["rm", "-rf", "--", restore_dir], check=False)


def _start_if_down(remote: RemoteHost, node: Node, timeout: float) -> None:
    """A failed step must not leave the node drained (it takes no writes) or stopped: restart it
    once, with its plain files."""
    host = remote.host
    try:
        drained = "Mode: DRAINED" in node.nodetool("netstats", timeout=60).stdout
    except DmfError:
        drained, running = False, False
    else:
        running = True
    if drained:
        remote.run(command_argv(host.stop_command), timeout=timeout, check=False)
    if drained or not running:
        remote.run(command_argv(host.start_command), timeout=timeout, check=False)
