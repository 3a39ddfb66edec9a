"""This machine's view of the cluster block's hosts: what a host name resolves to here, and which
nodes run on this machine (a restore's PATH must stay out of their directories)."""
from __future__ import annotations

import ipaddress
import os
import socket

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.restore_checks import NodeDir


def addresses_of(name: str) -> set[str]:
    """The name itself and, for a host name, the addresses it resolves to on this machine."""
    try:
        ipaddress.ip_address(name)
        return {name}
    except ValueError:
        pass
    try:
        return {name} | {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return {name}


def is_local(address: str) -> bool:
    """Whether `address` (an IP) is this machine's: only then can a socket bind to it."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
        return True
    except (ValueError, OSError):
        return False


def local_node_dirs(cluster: CassandraCluster) -> list[NodeDir]:
    """The directories of the block's nodes that run on this machine, as named and as resolved here."""
    dirs = []
    for host in cluster.hosts:
        if not any(is_local(a) for name in {host.address, host.ssh_address} for a in addresses_of(name)):
            continue
        named = [*((d, "data directory") for d in host.data_dirs), (host.commitlog_dir, "commit-log directory"),
                 (host.commitlog_archive_dir, "commit-log archive directory"),
                 (host.restore_staging_dir, "restore staging directory")]
        dirs.extend(NodeDir(host.address, role, form) for path, role in named
                    for form in dict.fromkeys((path, os.path.realpath(path))))
    return dirs
