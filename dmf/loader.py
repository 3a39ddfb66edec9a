"""Loading downloaded SSTables into a cluster: sstableloader (any topology) or nodetool import."""
from __future__ import annotations

import posixpath
import shlex
import subprocess

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.errors import DmfError
from dmf.core.node_restore import SSTABLE_SUFFIXES as SSTABLE_COMPONENT
from dmf.node import Node
from dmf.restore_plan import LoadUnit, TableLoad
from dmf.ssh import RemoteHost



class LoadError(DmfError):
    pass


def run_sstableloader(cluster: CassandraCluster, hosts: tuple[str, ...], unit: LoadUnit | TableLoad,
                      timeout: float = 3600) -> str:
    """Streams one <keyspace>/<table> directory into the cluster; returns sstableloader's summary."""
    argv = [*shlex.split(cluster.sstableloader), "-d", ",".join(hosts), "-p", str(cluster.cql_port), "--no-progress"]
    secret = None
    if cluster.cql_username:
        secret = cluster.cql_password.get_secret_value() if cluster.cql_password else ""
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


def import_unit(remote: RemoteHost, unit: LoadUnit) -> None:
    """Places one unit's SSTables in the host's staging dir and runs `nodetool import` on it."""
    host = remote.host
    staging = posixpath.join(host.restore_staging_dir, unit.set_name, unit.keyspace, unit.table)
    remote.run(["rm", "-rf", "--", staging])
    remote.run(["mkdir", "-p", "--", staging])
    for local in sorted(p for p in unit.directory.rglob("*") if p.is_file() and p.name.endswith(SSTABLE_COMPONENT)):
        relative = local.relative_to(unit.directory).as_posix()
        if "/" in relative:
            continue  # secondary-index SSTables are rebuilt by import, not placed
        with open(local, "rb") as source:
            remote.write_file(posixpath.join(staging, relative), source)
    import_folder(remote, unit.keyspace, unit.table, staging, unit.describe())


def import_folder(remote: RemoteHost, keyspace: str, table: str, folder: str, label: str) -> None:
    """`nodetool import` of the folder's SSTables into the table, then the folder removed; what the
    import left behind (it refused) fails the load."""
    Node(remote).nodetool("import", keyspace, table, folder)
    leftovers = remote.list_files(folder)
    remote.run(["rm", "-rf", "--", folder])
    if leftovers:
        raise LoadError(f"nodetool import left {len(leftovers)} file(s) of {label} unimported "
                        "(see the node's system.log)")


