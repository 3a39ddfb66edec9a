"""CQL over TLS against the bed's nodes (client_encryption_options with a self-signed CA, plaintext
still accepted): dmf's connections are encrypted, the certificate and the hostname are verified (a
certificate from another CA, and a node reached at an address its certificate does not name, are refused)."""
from __future__ import annotations

import datetime
import socket
import ssl
import threading
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dmf.core.errors import DmfError
from dmf.cql import connect
from dmf.testbed.cassandra import CLUSTER_NAME


def clients_tls_flags(cluster_block) -> list[bool]:
    """ssl_enabled of every client connection the node that answers has open."""
    with connect(cluster_block, contact_points=["127.0.0.1"]) as session:
        rows = session.execute("SELECT ssl_enabled FROM system_views.clients")
        return [row.ssl_enabled for row in rows]


def test_the_bed_block_connects_over_tls_and_plaintext_is_seen_as_such(cluster_block):
    assert cluster_block.cql_tls
    tls_flags = clients_tls_flags(cluster_block)
    assert tls_flags and all(tls_flags)
    plain_flags = clients_tls_flags(cluster_block.model_copy(update={"cql_tls": False}))
    assert False in plain_flags


def other_ca(tmp_path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the bed's CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_a_node_certificate_from_another_ca_is_refused_in_one_line(cluster_block, tmp_path):
    untrusting = cluster_block.model_copy(update={"cql_tls_ca_path": other_ca(tmp_path)})
    with pytest.raises(DmfError) as refused:
        with connect(untrusting, contact_points=["127.0.0.1"], timeout=10):
            pass
    message = str(refused.value)
    assert "certificate verify failed" in message and "\n" not in message


def test_hostname_verification_is_on_unless_turned_off(cluster_block):
    # The driver resolves contact points to IPs and checks the certificate against the node's IP, which
    # the bed's certificate names: a connection succeeding here has passed that check.
    with connect(cluster_block, contact_points=["127.0.0.2"]) as session:
        assert session.cluster.ssl_context.check_hostname
        assert session.cluster.ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert session.execute("SELECT release_version FROM system.local").one().release_version
    lenient = cluster_block.model_copy(update={"cql_tls_check_hostname": False})
    with connect(lenient, contact_points=["127.0.0.2"]) as session:
        assert not session.cluster.ssl_context.check_hostname


# A loopback address the bed's certificate does not name (it names 127.0.0.1-4).
UNNAMED_ADDRESS = "127.0.0.9"


@contextmanager
def forwarded(listen: tuple[str, int], target: tuple[str, int]):
    """TCP from `listen` to `target`, byte for byte: node 1's TLS reached at an address its certificate
    does not name."""
    server = socket.create_server(listen)

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(source, sink), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()


def test_a_node_reached_at_an_address_its_certificate_does_not_name_is_refused_in_one_line(cluster_block):
    with forwarded((UNNAMED_ADDRESS, cluster_block.cql_port), ("127.0.0.1", cluster_block.cql_port)):
        with pytest.raises(DmfError) as refused:
            with connect(cluster_block, contact_points=[UNNAMED_ADDRESS], timeout=10):
                pass
        # The same bytes pass once the hostname check is off: the address was all that failed (the
        # control connection, through the forwarder, read the cluster's name).
        lenient = cluster_block.model_copy(update={"cql_tls_check_hostname": False})
        with connect(lenient, contact_points=[UNNAMED_ADDRESS], timeout=10) as session:
            assert session.cluster.metadata.cluster_name == CLUSTER_NAME
    message = str(refused.value)
    assert message.startswith(f"cannot reach Cassandra over CQL at {UNNAMED_ADDRESS}:{cluster_block.cql_port}: ")
    assert f"IP address mismatch, certificate is not valid for '{UNNAMED_ADDRESS}'" in message
    assert "\n" not in message


def test_an_unreadable_ca_file_is_one_line(cluster_block, tmp_path):
    missing = cluster_block.model_copy(update={"cql_tls_ca_path": str(tmp_path / "nope.pem")})
    with pytest.raises(DmfError, match="cql_tls_ca"):
        with connect(missing):
            pass
