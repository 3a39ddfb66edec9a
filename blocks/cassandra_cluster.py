"""The Cassandra cluster: its hosts, how to reach them over SSH, their directories and tools, CQL access."""
from __future__ import annotations

import posixpath
import shlex

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from prefect.blocks.core import Block

from dmf.core.errors import InputError, quote
from dmf.core.paths import check_commitlog_archive_dir
from dmf.core.targets import parse_hosts


class CassandraHost(BaseModel):
    """One node. `address` is the node's Cassandra address, the name it has in the bucket layout."""

    address: str = Field(description="The node's listen/rpc address (its identity in S3 keys).")
    ssh_host: str | None = Field(default=None, description="SSH address; defaults to `address`.")
    ssh_port: int = Field(default=22, ge=1, le=65535)
    jmx_host: str = Field(default="127.0.0.1", description="JMX address nodetool uses, seen from the node.")
    jmx_port: int = Field(default=7199, ge=1, le=65535)
    data_dirs: list[str] = Field(default_factory=lambda: ["/var/lib/cassandra/data"])
    commitlog_dir: str = "/var/lib/cassandra/commitlog"
    commitlog_archive_dir: str = Field(default="/var/lib/cassandra/commitlog_archive",
                                       description="Where archive_command puts closed commit-log segments.")
    cdc_raw_dir: str | None = Field(default=None, description="cassandra.yaml's cdc_raw_directory, on nodes with "
                                    "cdc_enabled: the shipper ships CDC segments' durable prefixes and drains it.")
    config_dir: str = Field(default="/etc/cassandra", description="cassandra.yaml and friends (registry backup).")
    nodetool: str = Field(default="nodetool", description="nodetool command on the node.")
    sstableloader: str | None = Field(
        default=None, description="sstableloader command on the node (`--mode node` into another topology streams "
                                  "from the nodes); default: the sstableloader beside `nodetool` (same folder and "
                                  "prefix, such as sudo), else `sstableloader` on the node's PATH.")
    python: str = Field(default="python3",
                        description="Python 3 on the node (cqlsh's); it uploads the node's files straight to S3 "
                                    "(see the repository's upload_from_nodes).")
    system_log: str = Field(default="/var/log/cassandra/system.log",
                            description="Cassandra's system.log (replay reports are read from it).")
    stop_command: str = Field(default="sudo systemctl stop cassandra",
                              description="Stops the node; returns once it is stopped.")
    start_command: str = Field(default="sudo systemctl start cassandra",
                               description="Starts the node (it need not pass the environment: a replay's JVM "
                                           "option goes into jvm_options_file).")
    jvm_options_file: str | None = Field(
        default=None, description="A JVM options file the node's start reads (default: <config_dir>/"
                                  "jvm-server.options, read by every Cassandra packaging); a point-in-time "
                                  "replay adds its -Dcassandra.replayList line there for one start.")
    restore_staging_dir: str = Field(default="/var/lib/cassandra/dmf_restore",
                                     description="Where `--mode import` places files before `nodetool import` "
                                                 "(same filesystem as the data directories).")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return parse_hosts(value)[0]

    @model_validator(mode="after")
    def _separate_commitlog_dirs(self) -> CassandraHost:
        check_commitlog_archive_dir(self.address, self.commitlog_dir, self.commitlog_archive_dir)
        return self

    @property
    def ssh_address(self) -> str:
        return self.ssh_host or self.address

    @property
    def sstableloader_command(self) -> str:
        return self.sstableloader or tool_beside(self.nodetool, "sstableloader")

    @property
    def jvm_options_path(self) -> str:
        return self.jvm_options_file or posixpath.join(self.config_dir, "jvm-server.options")


def tool_beside(nodetool: str, tool: str) -> str:
    """`tool` as the nodetool command runs: the words before nodetool kept (sudo -u cassandra), the
    program in nodetool's folder (Cassandra's bin/ holds both); `tool` alone when the command names
    no program called nodetool."""
    words = shlex.split(nodetool)
    for i, word in enumerate(words):
        if posixpath.basename(word) == "nodetool":
            return shlex.join([*words[:i], posixpath.join(posixpath.dirname(word), tool)])
    return tool


def check_jmx_credentials(username: str | None, password: str | None) -> None:
    """Both or neither, each one token: nodetool reads its -pwf file as `<user> <password>` split on
    any whitespace, so neither can hold a space, tab or newline. The password is never in a message."""
    if (username is None) != (password is None):
        given, missing = ("jmx_username", "jmx_password") if password is None else ("jmx_password", "jmx_username")
        raise InputError(f"the cluster block sets {given} without {missing}: JMX authentication needs both "
                         "(or neither, for a JMX without authentication)")
    if username is None:
        return
    if not username or any(c.isspace() for c in username):
        raise InputError(f"the cluster block's jmx_username {quote(username)} is empty or contains whitespace "
                         "(a space, tab or newline), which nodetool's password file format cannot carry")
    if not password or any(c.isspace() for c in password):
        raise InputError("the cluster block's jmx_password is empty or contains whitespace (a space, tab or "
                         "newline), which nodetool's password file format cannot carry")


class CassandraCluster(Block):
    """Hosts, SSH access and CQL access of one Cassandra cluster. Secrets are secret fields."""

    _block_type_name = "dmf Cassandra Cluster"
    _block_type_slug = "dmf-cassandra-cluster"
    _description = "Hosts, SSH access, directories, tool commands and CQL access of a Cassandra cluster."

    hosts: list[CassandraHost] = Field(description="The cluster's nodes.")
    ssh_user: str = "cassandra"
    ssh_private_key: SecretStr | None = Field(default=None, description="Private key (OpenSSH PEM text).")
    ssh_private_key_path: str | None = Field(default=None, description="Or a path to the private key on the worker.")
    known_hosts: str | None = Field(default=None, description="known_hosts lines for the hosts (public keys).")
    known_hosts_path: str | None = Field(default=None, description="Or a known_hosts file on the worker.")
    strict_host_key_checking: bool = Field(default=True, description="Refuse hosts whose key is unknown.")
    ssh_connect_timeout: float = Field(default=15, gt=0)
    sstableloader: str = Field(default="sstableloader",
                               description="sstableloader command on the machine (Prefect worker) that runs restores.")
    cql_contact_points: list[str] = Field(default_factory=list, description="Defaults to the hosts' addresses.")
    cql_port: int = Field(default=9042, ge=1, le=65535)
    cql_username: str | None = None
    cql_password: SecretStr | None = None
    cql_tls: bool = Field(default=False, description="Connect to CQL over TLS (the nodes' client_encryption_options).")
    cql_tls_ca: str | None = Field(default=None, description="PEM certificate(s) of the CA that signed the nodes' "
                                   "certificates; without it (and cql_tls_ca_path), the worker's system CAs.")
    cql_tls_ca_path: str | None = Field(default=None, description="Or a PEM file of those CA certificates on the worker.")
    cql_tls_check_hostname: bool = Field(default=True, description="Require each node's certificate to name the "
                                         "address dmf connects to (turn off only for certificates without it).")
    jmx_username: str | None = Field(
        default=None, description="JMX user nodetool authenticates as (`nodetool -u`), when the nodes' JMX "
                                  "requires authentication; set it with jmx_password.")
    jmx_password: SecretStr | None = Field(
        default=None, description="That JMX user's password. It never appears on a command line: for each "
                                  "nodetool call it goes over the SSH channel's stdin into an owner-only file in "
                                  "a fresh private temporary directory on the node, given to `nodetool -pwf` and "
                                  "removed when the call ends. The file belongs to the SSH user, so the nodetool "
                                  "command must run as that user (or root), not as another user through sudo.")

    @model_validator(mode="after")
    def _jmx_credentials(self) -> CassandraCluster:
        check_jmx_credentials(self.jmx_username,
                              None if self.jmx_password is None else self.jmx_password.get_secret_value())
        return self

    def host(self, address: str) -> CassandraHost:
        for host in self.hosts:
            if address in (host.address, host.ssh_host):
                return host
        known = ", ".join(h.address for h in self.hosts)
        raise InputError(f"host {address!r} is not in the cluster block (known: {known})")

    def contact_points(self) -> list[str]:
        return self.cql_contact_points or [h.address for h in self.hosts]

    def cql_secret(self) -> str:
        """The CQL password in the clear ("" when unset), for the one client call that needs it."""
        return self.cql_password.get_secret_value() if self.cql_password else ""
