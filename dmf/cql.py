"""CQL access to the cluster with cassandra-driver, configured from the cluster block."""
from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import RoundRobinPolicy

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.errors import DmfError
from dmf.core.targets import SYSTEM_KEYSPACES, DbTarget


def identifier(name: str) -> str:
    """A keyspace, table or column name as a quoted CQL identifier (case kept, quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(keyspace: str, table: str) -> str:
    return f"{identifier(keyspace)}.{identifier(table)}"


def tls_context(cluster: CassandraCluster) -> ssl.SSLContext | None:
    """The block's TLS settings as an SSLContext: certificate always verified, hostname by default."""
    if not cluster.cql_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=cluster.cql_tls_ca_path, cadata=cluster.cql_tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise DmfError(f"cql_tls_ca / cql_tls_ca_path: not a readable PEM CA certificate ({exc})") from None
    context.check_hostname = cluster.cql_tls_check_hostname
    return context


@contextmanager
def connect(cluster: CassandraCluster, contact_points: list[str] | None = None,
            timeout: float = 30) -> Iterator[Session]:
    auth = None
    if cluster.cql_username:
        password = cluster.cql_secret()
        auth = PlainTextAuthProvider(username=cluster.cql_username, password=password)
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout)
    driver = Cluster(contact_points or cluster.contact_points(), port=cluster.cql_port, auth_provider=auth,
                     execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=5,
                     ssl_context=tls_context(cluster),
                     connect_timeout=timeout, control_connection_timeout=timeout)
    try:
        try:
            session = driver.connect()
        except NoHostAvailable as exc:
            points = ", ".join(contact_points or cluster.contact_points())
            raise DmfError(f"cannot reach Cassandra over CQL at {points}:{cluster.cql_port}: "
                           f"{'; '.join(str(e) for e in exc.errors.values())[:300]}") from None
        yield session
    finally:
        driver.shutdown()


def cluster_name_of(cluster: CassandraCluster) -> str:
    """The name the cluster's lease is held under."""
    with connect(cluster) as session:
        return session.cluster.metadata.cluster_name


@dataclass(frozen=True)
class NodeFacts:
    address: str
    host_id: str
    tokens: tuple[str, ...]
    cassandra_version: str
    schema_version: str


def node_facts(session: Session) -> dict[str, NodeFacts]:
    """Every node's host ID, tokens, version and schema version, keyed by its addresses.

    Taken from the driver's cluster metadata (read by its control connection from system.local
    and system.peers_v2 of one node), so no query has to reach a particular node.
    """
    metadata = session.cluster.metadata
    tokens: dict[object, list[str]] = {}
    for token, owner in metadata.token_map.token_to_host_owner.items():
        tokens.setdefault(owner, []).append(str(token.value))
    schema_version = str(session.execute("SELECT schema_version FROM system.local").one().schema_version)
    facts: dict[str, NodeFacts] = {}
    for host in metadata.all_hosts():
        fact = NodeFacts(str(host.broadcast_address or host.address), str(host.host_id),
                         tuple(sorted(tokens.get(host, ()), key=int)), host.release_version or "", schema_version)
        for address in {host.address, host.broadcast_address, host.broadcast_rpc_address}:
            if address:
                facts[str(address)] = fact
    return facts


def user_keyspaces(session: Session) -> list[str]:
    rows = session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
    return sorted(r.keyspace_name for r in rows if r.keyspace_name not in SYSTEM_KEYSPACES)


def live_table_folders(session: Session, target: DbTarget) -> tuple[str, ...]:
    """`<ks>/<table>-<id>` of each table and view the target covers, as they exist now. A dropped
    table's folder stays on the nodes with its backups/ and snapshots/, and a table created again
    under the same name gets a folder of its own, a new ID: of two folders of one name, only the
    one named here is the table's."""
    folders = []
    for kind, name in (("tables", "table_name"), ("views", "view_name")):
        for row in session.execute(f"SELECT keyspace_name, {name} AS name, id FROM system_schema.{kind}"):
            if target.covers(row.keyspace_name, row.name):
                folders.append(f"{row.keyspace_name}/{row.name}-{row.id.hex}")
    return tuple(sorted(folders))


def describe_schema(session: Session, target: DbTarget, keyspaces: list[str]) -> str:
    """CQL that recreates the target, table IDs kept (server-side DESCRIBE … WITH INTERNALS)."""
    statements: list[str] = []
    if target.table:
        # The keyspace and its user types (a table's columns may use them), then the table and its indexes.
        rows = session.execute(f"DESCRIBE KEYSPACE {identifier(target.keyspace)} WITH INTERNALS")
        statements.extend(r.create_statement for r in rows if r.type in ("keyspace", "type"))
        rows = session.execute(f"DESCRIBE TABLE {qualified(target.keyspace, target.table)} WITH INTERNALS")
        statements.extend(r.create_statement for r in rows)
    else:
        for keyspace in [target.keyspace] if target.keyspace else keyspaces:
            rows = session.execute(f"DESCRIBE KEYSPACE {identifier(keyspace)} WITH INTERNALS")
            statements.extend(r.create_statement for r in rows)
    return "\n\n".join(s for s in statements if s) + "\n"
