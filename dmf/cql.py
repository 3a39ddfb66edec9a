"""CQL access to the cluster with cassandra-driver, configured from the cluster block."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, Session
from cassandra.policies import RoundRobinPolicy

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.targets import SYSTEM_KEYSPACES, DbTarget


@contextmanager
def connect(cluster: CassandraCluster, contact_points: list[str] | None = None,
            timeout: float = 30) -> Iterator[Session]:
    auth = None
    if cluster.cql_username:
        password = cluster.cql_password.get_secret_value() if cluster.cql_password else ""
        auth = PlainTextAuthProvider(username=cluster.cql_username, password=password)
    driver = Cluster(contact_points or cluster.contact_points(), port=cluster.cql_port, auth_provider=auth,
                     load_balancing_policy=RoundRobinPolicy(), protocol_version=5,
                     connect_timeout=timeout, control_connection_timeout=timeout)
    try:
        session = driver.connect()
        session.default_timeout = timeout
        yield session
    finally:
        driver.shutdown()


@dataclass(frozen=True)
class NodeFacts:
    address: str
    host_id: str
    tokens: tuple[str, ...]
    cassandra_version: str
    schema_version: str


def node_facts(session: Session) -> dict[str, NodeFacts]:
    """Every node's host ID, tokens, version and schema version, keyed by listen and rpc address."""
    facts: dict[str, NodeFacts] = {}
    local = session.execute("SELECT broadcast_address, rpc_address, host_id, tokens, release_version, "
                            "schema_version FROM system.local").one()
    rows = [(local, [local.broadcast_address, local.rpc_address])]
    for peer in session.execute("SELECT peer, native_address, host_id, tokens, release_version, "
                                "schema_version FROM system.peers_v2"):
        rows.append((peer, [peer.peer, peer.native_address]))
    for row, addresses in rows:
        fact = NodeFacts(str(addresses[0]), str(row.host_id), tuple(sorted(row.tokens or (), key=int)),
                         row.release_version or "", str(row.schema_version or ""))
        for address in addresses:
            if address is not None:
                facts[str(address)] = fact
    return facts


def user_keyspaces(session: Session) -> list[str]:
    rows = session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
    return sorted(r.keyspace_name for r in rows if r.keyspace_name not in SYSTEM_KEYSPACES)


def describe_schema(session: Session, target: DbTarget, keyspaces: list[str]) -> str:
    """CQL that recreates the target, table IDs kept (server-side DESCRIBE … WITH INTERNALS)."""
    statements: list[str] = []
    if target.table:
        ks = session.execute(f'DESCRIBE KEYSPACE "{target.keyspace}"').one()
        statements.append(ks.create_statement.split(";")[0] + ";" if ks else "")
        rows = session.execute(f'DESCRIBE TABLE "{target.keyspace}"."{target.table}" WITH INTERNALS')
        statements.extend(r.create_statement for r in rows)
    else:
        for keyspace in [target.keyspace] if target.keyspace else keyspaces:
            rows = session.execute(f'DESCRIBE KEYSPACE "{keyspace}" WITH INTERNALS')
            statements.extend(r.create_statement for r in rows)
    return "\n\n".join(s for s in statements if s) + "\n"
