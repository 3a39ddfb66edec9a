"""cassandra.yaml of the one-token nodes dmf runs itself: the test bed's and a restore's scratch node (pure)."""
from __future__ import annotations

from pathlib import PurePath


def yaml_head(cluster_name: str, token: str, home: PurePath, seeds: str, address: str, storage_port: int,
              native_port: int, commitlog_sync_period_ms: int = 10000) -> str:
    """What every one-token node of ours has in cassandra.yaml (the bed's and a scratch node): its name,
    token, folders under `home`, seeds and loopback ports; each adds its own lines after it."""
    return f"""\
cluster_name: {cluster_name}
num_tokens: 1
initial_token: "{token}"
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [{home / 'data'}]
commitlog_directory: {home / 'commitlog'}
saved_caches_directory: {home / 'saved_caches'}
hints_directory: {home / 'hints'}
cdc_raw_directory: {home / 'cdc_raw'}
commitlog_sync: periodic
commitlog_sync_period: {commitlog_sync_period_ms}ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seeds}"
listen_address: {address}
rpc_address: {address}
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
endpoint_snitch: SimpleSnitch
concurrent_compactors: 1
"""
