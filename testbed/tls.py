"""A self-signed CA and one server certificate for the nodes' CQL port, made once per test bed.

The certificate names every node address, the solo cluster's too (IP SANs), so clients verify the hostname as they would
in production. RSA keys: Cassandra's PEM reader takes RSA PKCS#8 on every supported JDK.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .layout import MAX_NODES, SOLO_INDEX, Testbed

VALID_DAYS = 3650


def ca_path(tb: Testbed) -> Path:
    return tb.root / "tls" / "ca.pem"


def node_keystore_path(tb: Testbed) -> Path:
    """Private key and certificate chain in one PEM file, as PEMBasedSslContextFactory's keystore."""
    return tb.root / "tls" / "node.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ensure_certificates(tb: Testbed) -> None:
    if ca_path(tb).exists() and node_keystore_path(tb).exists():
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, node_key = _key(), _key()
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name("dmf test bed CA")).issuer_name(_name("dmf test bed CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    addresses = [ipaddress.IPv4Address(f"127.0.0.{i}") for i in (*range(1, MAX_NODES + 1), SOLO_INDEX)]
    node_cert = (x509.CertificateBuilder()
                 .subject_name(_name("dmf test bed node")).issuer_name(ca_cert.subject)
                 .public_key(node_key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(minutes=5))
                 .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                 .add_extension(x509.SubjectAlternativeName([x509.IPAddress(a) for a in addresses]), critical=False)
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .sign(ca_key, hashes.SHA256()))
    directory = ca_path(tb).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pem = node_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    fd = os.open(node_keystore_path(tb), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as keystore:
        keystore.write(key_pem + node_cert.public_bytes(serialization.Encoding.PEM))
    ca_path(tb).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
