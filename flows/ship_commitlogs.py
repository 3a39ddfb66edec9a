"""ship-commitlogs: per host, in parallel, upload the archived commit-log segments under the
latest complete full snapshot that includes the host, seal the batch, delete local copies."""
from __future__ import annotations

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.errors import DmfError, InputError
from dmf.core.paths import check_commitlog_archive_dir
from dmf.core.targets import parse_hosts
from dmf.core.timestamps import format_ts
from dmf.cql import connect, node_facts
from dmf.repository import Repository
from dmf.storage import Storage
from dmf.tasks.commitlogs import ship_host_commitlogs


class ShippingFailed(DmfError):
    pass


@flow(name="ship-commitlogs")
def ship_commitlogs(hosts: str | list[str] | None = None, cluster_block: str = DEFAULT_BLOCK,
                    repository_block: str = DEFAULT_BLOCK, max_upload_mib_s: float | None = None) -> list[dict]:
    """Upload archived commit-log segments of HOSTS (default: every host of the cluster block), each
    host within `max_upload_mib_s` (default: the repository block's)."""
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block).with_limits(max_upload_mib_s=max_upload_mib_s)
    host_list = parse_hosts(hosts) if hosts else tuple(h.address for h in cluster.hosts)
    for address in host_list:
        host = cluster.host(address)
        # The block checks this when loaded, but a host built by model_construct or changed by assignment
        # skips validators, and shipping deletes what it ships.
        check_commitlog_archive_dir(host.address, host.commitlog_dir, host.commitlog_archive_dir)
    with connect(cluster) as session:
        facts = node_facts(session)
    fulls = Repository(Storage(repository)).latest_full_of_each(host_list)
    futures = {}
    for address in host_list:
        full = fulls[address]
        if full is None:
            raise InputError(f"no complete full snapshot includes {address}: take one "
                             "(dmf backup snapshot) before shipping its commit logs")
        fact = facts.get(address)
        if fact is None:
            raise InputError(f"host {address} is not a member of the cluster")
        futures[address] = ship_host_commitlogs.submit(cluster, repository, fact, full.snapshot_ts)
        get_run_logger().debug("%s ships under %s", address, format_ts(full.snapshot_ts))
    return every_host_result(futures, "commit-log shipping")


def every_host_result(futures: dict, what: str) -> list:
    """Each host's result; one ShippingFailed naming every host that failed, after all have ended."""
    results, failures = [], []
    for address, future in futures.items():
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 — report every host
            failures.append(f"{address}: {exc}")
    if failures:
        raise ShippingFailed(f"{what} failed on {len(failures)} host(s): {'; '.join(failures)}")
    return results
