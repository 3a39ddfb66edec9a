"""A second cluster of one node (127.0.0.4, its own name and token ring) beside the bed's three, for
restores into another topology: started by the tests that need it, stopped and removed after."""
from __future__ import annotations

import shutil

from dmf.blocks import CassandraCluster

from . import blocks, cassandra
from .layout import SOLO_INDEX, TOKENS, Node, Testbed

CLUSTER_NAME = "dmf-testbed-solo"


def node(tb: Testbed) -> Node:
    return tb.node(SOLO_INDEX)


def start(tb: Testbed) -> CassandraCluster:
    """Starts the solo node (fresh: its directory is removed by stop) and returns its cluster block."""
    solo = node(tb)
    if not cassandra.is_running(solo):
        cassandra.configure_node(tb, solo, seeds=f"{solo.address}:7000", token=TOKENS[1][0],
                                 cluster_name=CLUSTER_NAME)
        cassandra.start(tb, solo)
    cassandra.wait_ready(tb, solo, expect_up=[solo])
    return blocks.cluster(tb, [solo])


def stop(tb: Testbed) -> None:
    cassandra.stop(tb, node(tb))
    shutil.rmtree(node(tb).home, ignore_errors=True)
