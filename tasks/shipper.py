"""The long-lived shipper's one task per node: dmf.shipper.NodeShipper, started again after a failure."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import paramiko
from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.errors import DmfError, PermanentError
from dmf.core.timestamps import utcnow
from dmf.cql import NodeFacts
from dmf.shipper import NodeShipper
from dmf.tasks.common import TASK_DEFAULTS

RESTART_AFTER_S = 5.0


@task(name="ship-node-continuously", task_run_name="ship-continuously-{facts.address}", **TASK_DEFAULTS)
def ship_node_continuously(cluster: CassandraCluster, repository: S3Repository, facts: NodeFacts,
                           snapshot_ts: datetime, cluster_name: str, holder: str, until: datetime,
                           seal_every_s: float) -> dict:
    """Ships the node's segments until `until`. A dropped SSH session or a store hiccup starts a new
    session (which resumes from the sealed batches) RESTART_AFTER_S later; bad configuration, a lost
    lease, or failing to the end fails the task."""
    logger = get_run_logger()
    failures = 0
    while True:
        try:
            result = NodeShipper(cluster, repository, facts, snapshot_ts, cluster_name, holder,
                                 seal_every_s).run(until)
            return {**result, "restarts": failures}
        except PermanentError:
            raise
        except (DmfError, OSError, paramiko.SSHException) as exc:
            failures += 1
            if utcnow() + timedelta(seconds=RESTART_AFTER_S) >= until:
                raise
            logger.warning("%s: shipping stopped (%s); a new session in %.0f s", facts.address, exc,
                           RESTART_AFTER_S)
            time.sleep(RESTART_AFTER_S)
