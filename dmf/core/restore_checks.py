"""Rules a restore checks before it downloads anything: HOSTS are live ring members, PATH is an
absolute local directory outside the Cassandra directories of a node on the same machine (pure)."""
from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dmf.core.errors import InputError, quote
from dmf.core.paths import is_within
from dmf.core.targets import DbTarget


def absolute_path(path: str, cwd: str | None) -> str:
    """PATH made absolute against `cwd` (the operator's working directory).

    Without one (a run queued to a worker with -a, or started from the UI) a relative PATH would
    resolve in the worker's temporary directory, so it is refused. Not normalised here: '..' after a
    symlink means what the file system says, which the flow's resolve() honours.
    """
    if not path:
        raise InputError("PATH is empty: give the local directory to download into")
    if posixpath.isabs(path):
        return path
    if cwd is None:
        raise InputError(f"PATH {quote(path)} is relative: a queued or deployed run would resolve it in the "
                         "Prefect worker's temporary directory; give an absolute path")
    return posixpath.join(cwd, path)


@dataclass(frozen=True)
class NodeDir:
    """A directory Cassandra (or dmf on the node) owns, on a node that runs on this machine."""

    host: str
    role: str      # e.g. "data directory"
    path: str


def check_outside_node_dirs(root: str, node_dirs: Iterable[NodeDir]) -> None:
    """PATH must not be one of those directories or below one: Cassandra would take the files for its own
    (data), shipping deletes what it ships (commit-log archive), `--mode import` empties its staging dir."""
    for d in node_dirs:
        if is_within(root, d.path):
            raise InputError(f"PATH {root} is inside {d.path}, the {d.role} of {d.host}, which runs on this "
                             "machine: choose a PATH outside the node's directories")


@dataclass(frozen=True)
class RingNode:
    address: str           # the node's address as the ring names it
    up: bool | None        # as the driver sees it; None: not known (yet)
    datacenter: str = ""


def datacenters(ring: Mapping[str, RingNode]) -> dict[str, int]:
    """Nodes per datacenter."""
    counts: dict[str, int] = {}
    for node in {n.address: n for n in ring.values()}.values():
        counts[node.datacenter] = counts.get(node.datacenter, 0) + 1
    return counts


def _normal(address: str) -> str:
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address.lower()


def _order(address: str) -> tuple:
    try:
        ip = ipaddress.ip_address(address)
        return (ip.version, int(ip), "")
    except ValueError:
        return (7, 0, address.lower())


def check_hosts_in_ring(hosts: Mapping[str, Iterable[str]], ring: Mapping[str, RingNode],
                        may_be_down: Iterable[str] = ()) -> dict[str, str]:
    """Each HOSTS entry's ring address; InputError naming the entries that are not live members.

    hosts: each entry → the addresses it stands for (itself, its cluster-block address, what a name
    resolves to); ring: every address of every node (listen, broadcast, rpc) → that node;
    may_be_down: entries an interrupted replay left restarting (resuming it brings them back).
    """
    may_be_down = set(may_be_down)
    by_address = {_normal(a): node for a, node in ring.items()}
    found: dict[str, str] = {}
    outside, down = [], []
    for host, candidates in hosts.items():
        node = next((by_address[_normal(a)] for a in candidates if _normal(a) in by_address), None)
        if node is None:
            outside.append(host)
        elif node.up is False and host not in may_be_down:
            down.append(host)
        else:
            found[host] = node.address
    if outside or down:
        nodes = sorted({n.address: n for n in ring.values()}.values(), key=lambda n: _order(n.address))
        members = ", ".join(n.address + (" (down)" if n.up is False else "") for n in nodes) or "none"
        problems = []
        if outside:
            problems.append(f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not in the cluster's ring")
        if down:
            problems.append(f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down")
        raise InputError(f"HOSTS: {'; '.join(problems)} (its nodes: {members})")
    return found


def check_full_covers_ring(full_hosts: Iterable[str], snapshot: str, ring: Mapping[str, RingNode],
                           allow_subset: bool) -> None:
    """A full taken on some of this cluster's nodes holds only their share of the data (all of it only if
    every token range had a replica among them): restoring it as the whole target would silently lose
    rows. Refused unless `allow_subset`. A full of another cluster (none of its hosts in this ring) is
    the any-topology restore, and passes."""
    by_address = {_normal(a): node.address for a, node in ring.items()}
    members = set(by_address.values())
    covered = {by_address[_normal(h)] for h in full_hosts if _normal(h) in by_address}
    if not covered or covered == members or allow_subset:
        return
    missing = sorted(members - covered, key=_order)
    raise InputError(f"the backup {snapshot} was taken on {len(covered)} of this cluster's {len(members)} nodes "
                     f"(not on {', '.join(missing)}): it holds only their share of the data; restore a time "
                     "served by a full of every node, or pass --allow-host-subset if those nodes held it all "
                     "(e.g. the cluster grew since)")


def check_into(into: DbTarget, target: DbTarget, restore_schema: bool, replay_commitlogs: bool) -> DbTarget:
    """`--into`: a copy of one table under another name, never the table itself."""
    if target.table is None or into.table is None:
        raise InputError("--into copies one table: DB_TARGET and --into must both be keyspace.table")
    if into == target:
        raise InputError(f"--into {into} is DB_TARGET itself: leave --into out to restore in place")
    if restore_schema:
        raise InputError("--into creates the copy from the backup's schema itself: leave --schema out")
    if replay_commitlogs:
        raise InputError("--into cannot replay commit logs on the nodes (they replay into the original table "
                         "only): leave --replay-on nodes out to replay in a scratch Cassandra")
    return into
