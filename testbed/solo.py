"""A second cluster of one node (127.0.0.4, its own name and token ring) beside the bed's three, for
restores into another topology and for JMX with authentication (the three nodes' JMX has none):
started by the tests that need it, stopped and removed after."""
from __future__ import annotations

import shutil

from dmf.blocks import CassandraCluster

from . import blocks, cassandra
from .layout import JMX_PASSWORD, JMX_USER, SOLO_INDEX, TOKENS, Node, Testbed

CLUSTER_NAME = "dmf-testbed-solo"


def node(tb: Testbed) -> Node:
    return tb.node(SOLO_INDEX)


def start(tb: Testbed) -> CassandraCluster:
    """Starts the solo node (fresh: its directory is removed by stop), its JMX asking for JMX_USER and
    JMX_PASSWORD, and returns its cluster block, which holds them."""
    solo = node(tb)
    if not cassandra.is_running(solo):
        shutil.rmtree(solo.home, ignore_errors=True)  # a cut-off test's leftovers: start from nothing
        cassandra.configure_node(tb, solo, seeds=f"{solo.address}:7000", token=TOKENS[1][0],
                                 cluster_name=CLUSTER_NAME)
        cassandra.require_jmx_password(solo, JMX_USER, JMX_PASSWORD)
        cassandra.start(tb, solo)
    cassandra.wait_ready(tb, solo, expect_up=[solo])
    return blocks.cluster(tb, [solo], jmx_username=JMX_USER, jmx_password=JMX_PASSWORD)


def stop(tb: Testbed) -> None:
    cassandra.stop(tb, node(tb))
    shutil.rmtree(node(tb).home, ignore_errors=True)
