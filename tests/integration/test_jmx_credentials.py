"""nodetool through Node with the cluster block's JMX credentials, against the test bed. The bed's
JMX has no authentication, so nodetool's -u/-pwf are accepted and unchecked: what this shows is
that the one-call password file path works over real SSH and leaves nothing on the node."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from dmf.node import Node
from dmf.ssh import RemoteHost

pytestmark = pytest.mark.integration
PASSWORD = "bed-jmx-pw-$(not)-run"


def password_dirs(remote: RemoteHost) -> tuple[str, set[str]]:
    """The node's temp dir as the remote shell sees it, and the dmf-jmx.* directories in it."""
    tmp = remote.run(["sh", "-c", 'printf %s "${TMPDIR:-/tmp}"']).stdout
    found = remote.run(["find", tmp, "-maxdepth", "1", "-name", "dmf-jmx.*"]).stdout
    return tmp, set(found.split())


def test_nodetool_with_jmx_credentials_runs_and_leaves_no_password_file(cluster_block):
    block = cluster_block.model_copy(update={"jmx_username": "dmf-bed", "jmx_password": SecretStr(PASSWORD)})
    host = block.hosts[0]
    with RemoteHost(block, host) as remote:
        tmp, before = password_dirs(remote)
        result = Node(remote).nodetool("status", timeout=120)
        assert result.exit_status == 0
        assert host.address in result.stdout
        assert PASSWORD not in " ".join(result.argv)
        assert password_dirs(remote) == (tmp, before)
