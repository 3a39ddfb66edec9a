"""Configuration as Prefect blocks: the S3 repository and the Cassandra cluster."""
from dmf.blocks.cassandra_cluster import CassandraCluster, CassandraHost
from dmf.blocks.s3_repository import S3Repository
from dmf.core.defaults import DEFAULT_BLOCK

__all__ = ["CassandraCluster", "CassandraHost", "S3Repository", "DEFAULT_BLOCK"]
