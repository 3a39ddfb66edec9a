"""ship-commitlogs-continuous: the long-lived shipper. Under the shipper's own lease (one per cluster),
one task per node keeps an SSH session and a watching agent open and ships each archived segment as
it appears (dmf.shipper), until the run's end of life at a schedule tick; the run the schedule starts
then takes over. A run that finds the lease held waits `lease_wait_s`, then completes as a standby."""
from __future__ import annotations

from contextlib import ExitStack

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.errors import InputError
from dmf.core.paths import check_commitlog_archive_dir
from dmf.core.shipper import LIFETIME_S, SEAL_EVERY_S, end_of_life, shipper_lease_name
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import connect, node_facts
from dmf.flows.ship_commitlogs import every_host_result
from dmf.lease import ClusterBusy, bucket_lease, run_holder
from dmf.repository import Repository
from dmf.storage import Storage
from dmf.tasks.shipper import ship_node_continuously

LEASE_WAIT_S = 15.0


@flow(name="ship-commitlogs-continuous")
def ship_commitlogs_continuous(cluster_block: str = DEFAULT_BLOCK, repository_block: str = DEFAULT_BLOCK,
                               lifetime_s: float = LIFETIME_S, seal_every_s: float = SEAL_EVERY_S,
                               lease_wait_s: float = LEASE_WAIT_S, handover_tick_s: int = 60) -> dict:
    """Ship every host's archived segments within seconds, for about `lifetime_s` (up to the next
    `handover_tick_s`: the deployment's schedule), sealing each node's batch `seal_every_s` after its
    first segment."""
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block)
    hosts = [h.address for h in cluster.hosts]
    for host in cluster.hosts:  # shipping deletes what it ships: never from the live commit-log folder
        check_commitlog_archive_dir(host.address, host.commitlog_dir, host.commitlog_archive_dir)
    with connect(cluster) as session:
        facts = node_facts(session)
        cluster_name = session.cluster.metadata.cluster_name
    if missing := [a for a in hosts if a not in facts]:
        raise InputError(f"host(s) {', '.join(missing)} not members of the cluster")
    storage = Storage(repository)
    fulls = Repository(storage).latest_full_of_each(hosts)
    if missing := [a for a, full in fulls.items() if full is None]:
        raise InputError(f"no complete full snapshot includes {', '.join(missing)}: take one "
                         "(dmf backup snapshot) before shipping commit logs")
    logger = get_run_logger()
    holder = run_holder()
    with ExitStack() as held:
        try:
            held.enter_context(bucket_lease(storage, shipper_lease_name(cluster_name), holder, lease_wait_s))
        except ClusterBusy as exc:
            logger.info("standing by: %s", exc)
            return {"standby": True}
        until = end_of_life(utcnow(), lifetime_s, handover_tick_s)
        logger.info("shipping until %s UTC", format_ts(until))
        futures = {a: ship_node_continuously.submit(cluster, repository, facts[a], fulls[a].snapshot_ts,
                                                    cluster_name, holder, until, seal_every_s) for a in hosts}
        results = every_host_result(futures, "continuous shipping")
    return {"standby": False, "until": format_ts(until), "nodes": results}
