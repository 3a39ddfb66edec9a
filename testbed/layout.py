"""Where the test bed keeps its state, and the fixed loopback topology it runs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dmf.cassandra_jvm import lib_dir

CASSANDRA_VERSION = "5.0.9"
S3PROXY_VERSION = "2.6.0"
BUCKET = "dmf-backups"
# Static credentials of the local S3 server only (s3proxy checks them; moto accepts any pair).
S3_ACCESS_KEY = "testbed-access-key"
S3_SECRET_KEY = "testbed-secret-key"
CQL_USER = "cassandra"
CQL_PASSWORD = "cassandra"
# Balanced Murmur3 tokens for 1 and 3 nodes.
TOKENS = {1: ["-9223372036854775808"],
          3: ["-9223372036854775808", "-3074457345618258603", "3074457345618258602"]}
MAX_NODES = 3
# A second, one-node cluster beside the three (testbed/solo.py): restores into another topology.
SOLO_INDEX = 4
# The solo node's JMX requires these (testbed/solo.py); the three nodes' JMX has no authentication.
JMX_USER = "dmf-bed-jmx"
JMX_PASSWORD = "bed-jmx-pw-$(not)-run"


@dataclass(frozen=True)
class Node:
    index: int  # 1-based
    home: Path

    @property
    def address(self) -> str:
        return f"127.0.0.{self.index}"

    @property
    def jmx_port(self) -> int:
        return 7099 + 100 * self.index  # 7199, 7299, 7399

    @property
    def name(self) -> str:
        return f"node{self.index}"

    def dir(self, what: str) -> Path:
        return self.home / what


@dataclass(frozen=True)
class Testbed:
    root: Path
    cache: Path
    ssh_port: int = 2222
    s3_port: int = 5055
    prefect_port: int = 4200

    @classmethod
    def from_env(cls) -> Testbed:
        root = Path(os.environ.get("DMF_TESTBED_DIR", ".testbed")).resolve()
        cache = Path(os.environ.get("DMF_CACHE_DIR", ".cache")).resolve()
        return cls(root=root, cache=cache,
                   ssh_port=int(os.environ.get("DMF_TESTBED_SSH_PORT", "2222")),
                   s3_port=int(os.environ.get("DMF_TESTBED_S3_PORT", "5055")),
                   prefect_port=int(os.environ.get("DMF_TESTBED_PREFECT_PORT", "4200")))

    @property
    def lib(self) -> Path:
        return lib_dir(self.cache, CASSANDRA_VERSION)

    @property
    def s3proxy_jar(self) -> Path:
        return self.cache / f"s3proxy-{S3PROXY_VERSION}" / "s3proxy.jar"

    @property
    def s3_store(self) -> Path:
        """s3proxy's filesystem store: the bucket lives here, across `down` and `up`."""
        return self.root / "s3"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def node(self, index: int) -> Node:
        return Node(index, self.root / f"node{index}")

    def nodes(self, count: int) -> list[Node]:
        return [self.node(i) for i in range(1, count + 1)]
