"""Loading downloaded SSTables into a cluster: sstableloader (any topology) or nodetool import."""
from __future__ import annotations

import posixpath
import shlex
import subprocess
from collections.abc import Collection

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.errors import DmfError
from dmf.core.node_load import NodeTableLoad
from dmf.core.node_restore import SSTABLE_SUFFIXES as SSTABLE_COMPONENT
from dmf.node import Node
from dmf.restore_plan import LoadUnit, TableLoad
from dmf.ssh import RemoteHost



class LoadError(DmfError):
    pass


LOAD_TIMEOUT_S = 3600
# sstableloader on a node with the CQL password: read from the SSH channel's stdin, so it is in no
# command line sshd or the shell shows; BulkLoader takes it only as `-pw`, so it is in the loader
# JVM's own command line on the node while it runs (as on the worker's, the worker path).
_LOADER_WITH_PASSWORD = 'IFS= read -r p || exit 125\nexec {loader} -u {user} -pw "$p" {folder} </dev/null\n'
# Links a table's staged SSTables into its load folder under their load names: one `ln` per file,
# the (source, name) pairs NUL-separated on stdin, paths relative to the staging folder ($1).
_LINK_SCRIPT = 'cd -- "$1" && rm -rf -- "$2" && mkdir -p -- "$2" && xargs -0 -r -n 2 ln --'


def loader_options(cluster: CassandraCluster, hosts: tuple[str, ...]) -> list[str]:
    """sstableloader's options but the credentials: the nodes to learn the ring from, the CQL port."""
    return ["-d", ",".join(hosts), "-p", str(cluster.cql_port), "--no-progress"]


def run_sstableloader(cluster: CassandraCluster, hosts: tuple[str, ...], unit: LoadUnit | TableLoad,
                      timeout: float = LOAD_TIMEOUT_S) -> str:
    """Streams one <keyspace>/<table> directory into the cluster; returns sstableloader's summary."""
    argv = [*shlex.split(cluster.sstableloader), *loader_options(cluster, hosts)]
    secret = None
    if cluster.cql_username:
        secret = cluster.cql_secret()
        argv += ["-u", cluster.cql_username, "-pw", secret]
    argv.append(str(unit.directory))
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LoadError(f"sstableloader command not found: {cluster.sstableloader!r} (cluster block field "
                        "`sstableloader`)") from None
    except subprocess.TimeoutExpired:
        raise LoadError(f"sstableloader timed out after {timeout:.0f}s loading {unit.describe()}") from None
    output = result.stdout + result.stderr
    if secret:
        output = output.replace(secret, "***")
    if result.returncode != 0:
        tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
        raise LoadError(f"sstableloader failed on {unit.describe()} (exit {result.returncode}): {' | '.join(tail)[:500]}")
    return output


def stream_staged(remote: RemoteHost, staging: str, load: NodeTableLoad, hosts: tuple[str, ...]) -> None:
    """On the node: hard-links the table's staged SSTables into its load folder under their load names
    (fresh generations: no two collide), streams the folder into the cluster with the node's
    sstableloader (one JVM for the table's share), then removes the folder. Not destructive: the links
    only; the staged files stay for a rerun. Dies before the stream: a rerun makes the folder anew.
    After it: the rows are loaded, and streaming the same SSTables again is harmless (cells keep their
    timestamps)."""
    cluster = remote.cluster
    pairs = b"".join(f"{source}\0{posixpath.join(load.directory, name)}\0".encode() for source, name in load.links)
    remote.run(["sh", "-c", _LINK_SCRIPT, "sh", staging, load.directory], stdin=pairs)
    folder = posixpath.join(staging, load.directory)
    loader = [*shlex.split(remote.host.sstableloader_command), *loader_options(cluster, hosts)]
    if cluster.cql_username:
        secret = cluster.cql_secret()
        script = _LOADER_WITH_PASSWORD.format(loader=shlex.join(loader), user=shlex.quote(cluster.cql_username),
                                              folder=shlex.quote(folder))
        remote.run(["sh", "-c", script], stdin=f"{secret}\n".encode(), timeout=LOAD_TIMEOUT_S,
                   shown=[*loader, "-u", cluster.cql_username, "-pw", "***", folder], secrets=[secret] if secret else [])
    else:
        remote.run([*loader, folder], timeout=LOAD_TIMEOUT_S)
    remote.run(["rm", "-rf", "--", folder])


def import_unit(remote: RemoteHost, unit: LoadUnit) -> None:
    """Places one unit's SSTables in the host's staging dir and runs `nodetool import` on it."""
    host = remote.host
    staging = posixpath.join(host.restore_staging_dir, unit.set_name, unit.keyspace, unit.table)
    remote.run(["rm", "-rf", "--", staging])
    remote.run(["mkdir", "-p", "--", staging])
    placed = []
    for local in sorted(p for p in unit.directory.rglob("*") if p.is_file() and p.name.endswith(SSTABLE_COMPONENT)):
        relative = local.relative_to(unit.directory).as_posix()
        if "/" in relative:
            continue  # secondary-index SSTables are rebuilt by import, not placed
        with open(local, "rb") as source:
            remote.write_file(posixpath.join(staging, relative), source)
        placed.append(relative)
    import_folder(remote, unit.keyspace, unit.table, staging, unit.describe(), placed)


def import_folder(remote: RemoteHost, keyspace: str, table: str, folder: str, label: str,
                  placed: Collection[str]) -> None:
    """`nodetool import` of the folder's SSTables (`placed`: their file names) into the table, then the
    folder removed. A placed file the import left behind (it refused that SSTable) fails the load; a
    file the import wrote itself does not: opening an SSTable without its bloom filter, as
    sstableloader's streaming leaves them on a node (and so a later backup holds them), writes a
    Filter.db beside it, and the import then moves only the components it found."""
    Node(remote).nodetool("import", keyspace, table, folder)
    placed = set(placed)
    left = [f.path for f in remote.list_files(folder)]
    remote.run(["rm", "-rf", "--", folder])
    refused = sorted(name for name in left if name in placed)
    if refused:
        raise LoadError(f"nodetool import left {len(refused)} file(s) of {label} unimported, e.g. {refused[0]} "
                        "(see the node's system.log)")
