"""Configuration as Prefect blocks: the S3 repository and the Cassandra cluster."""
from dmf.blocks.cassandra_cluster import CassandraCluster, CassandraHost
from dmf.blocks.s3_repository import S3Repository

DEFAULT_BLOCK = "default"

__all__ = ["CassandraCluster", "CassandraHost", "S3Repository", "DEFAULT_BLOCK"]
