"""Saves the `default` blocks that point the product at the test bed, so `dmf` needs no flags."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import SecretStr

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, CassandraHost, S3Repository

from . import sshd, tls
from .layout import BUCKET, CQL_PASSWORD, CQL_USER, S3_ACCESS_KEY, S3_SECRET_KEY, Node, Testbed


def _testbed_command(tb: Testbed, verb: str, node: Node) -> str:
    """The test bed's own CLI run over SSH, where the working directory is not the repo's."""
    return shlex.join(["env", f"DMF_TESTBED_DIR={tb.root}", f"DMF_CACHE_DIR={tb.cache}",
                       f"DMF_TESTBED_SSH_PORT={tb.ssh_port}", f"DMF_TESTBED_S3_PORT={tb.s3_port}",
                       f"DMF_TESTBED_PREFECT_PORT={tb.prefect_port}",
                       str(Path(sys.executable).with_name("dmf-testbed")), verb, str(node.index)])


def repository(tb: Testbed) -> S3Repository:
    return S3Repository(
        bucket=BUCKET,
        credentials=AwsCredentials(
            aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=SecretStr(S3_SECRET_KEY),
            region_name="us-east-1",
            aws_client_parameters=AwsClientParameters(endpoint_url=tb.s3_endpoint)),
    )


def cluster(tb: Testbed, nodes: list[Node], jmx_username: str | None = None,
            jmx_password: str | None = None) -> CassandraCluster:
    return CassandraCluster(
        hosts=[CassandraHost(
            # sshd listens on the three nodes' addresses; the solo node is reached through the first.
            address=n.address, ssh_host=None if n.address in sshd.addresses() else sshd.addresses()[0],
            ssh_port=tb.ssh_port, jmx_port=n.jmx_port,
            data_dirs=[str(n.dir("data"))], commitlog_dir=str(n.dir("commitlog")),
            commitlog_archive_dir=str(n.dir("commitlog_archive")), config_dir=str(n.dir("conf")),
            nodetool=str(tb.bin / "nodetool"), restore_staging_dir=str(n.dir("restore_staging")),
            system_log=str(n.dir("logs") / "system.log"),
            start_command=_testbed_command(tb, "node-start", n), stop_command=_testbed_command(tb, "node-stop", n),
        ) for n in nodes],
        ssh_user="root",
        sstableloader=str(tb.bin / "sstableloader"),
        ssh_private_key_path=str(tb.ssh / "id_ed25519"),
        known_hosts_path=str(tb.ssh / "known_hosts"),
        cql_username=CQL_USER, cql_password=SecretStr(CQL_PASSWORD),
        cql_tls=True, cql_tls_ca_path=str(tls.ca_path(tb)),
        jmx_username=jmx_username, jmx_password=SecretStr(jmx_password) if jmx_password else None,
    )


def save_defaults(tb: Testbed, nodes: list[Node]) -> None:
    repository(tb).save(DEFAULT_BLOCK, overwrite=True)
    cluster(tb, nodes).save(DEFAULT_BLOCK, overwrite=True)
