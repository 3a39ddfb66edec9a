"""nodetool through Node with the cluster block's JMX credentials, over real SSH, against the solo
node (127.0.0.4), whose JMX asks for a password (the three nodes' JMX has no authentication): the
right password runs nodetool and leaves no password file on the node; a wrong or missing one is
refused in one line that names the refusal and shows no password."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from dmf.node import Node
from dmf.ssh import RemoteError, RemoteHost
from dmf.testbed.layout import JMX_PASSWORD

pytestmark = pytest.mark.integration
WRONG_PASSWORD = JMX_PASSWORD + "-wrong"


def password_dirs(remote: RemoteHost) -> tuple[str, set[str]]:
    """The node's temp dir as the remote shell sees it, and the dmf-jmx.* directories in it."""
    tmp = remote.run(["sh", "-c", 'printf %s "${TMPDIR:-/tmp}"']).stdout
    found = remote.run(["find", tmp, "-maxdepth", "1", "-name", "dmf-jmx.*"]).stdout
    return tmp, set(found.split())


def test_nodetool_with_the_right_jmx_password_runs_and_leaves_no_password_file(solo_cluster):
    host = solo_cluster.hosts[0]
    with RemoteHost(solo_cluster, host) as remote:
        tmp, before = password_dirs(remote)
        result = Node(remote).nodetool("status", timeout=120)
        assert result.exit_status == 0
        assert host.address in result.stdout
        assert JMX_PASSWORD not in " ".join(result.argv)
        assert password_dirs(remote) == (tmp, before)


@pytest.mark.parametrize("credentials, refusal", [
    ({"jmx_password": SecretStr(WRONG_PASSWORD)}, "error: Invalid username or password"),
    ({"jmx_username": None, "jmx_password": None}, "error: Authentication failed! Credentials required"),
], ids=["wrong-password", "no-credentials"])
def test_a_wrong_or_missing_jmx_password_is_refused_in_one_line(solo_cluster, credentials, refusal):
    block = solo_cluster.model_copy(update=credentials)
    host = block.hosts[0]
    with RemoteHost(block, host) as remote:
        with pytest.raises(RemoteError) as refused:
            Node(remote).nodetool("status", timeout=120)
    message = str(refused.value)
    # nodetool's own line, not the last line of the Java stack trace it prints after it
    assert message.startswith(f"{host.address}: `") and message.endswith(f"` exited 2: {refusal}")
    assert JMX_PASSWORD not in message and WRONG_PASSWORD not in message
