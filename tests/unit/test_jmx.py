"""JMX credentials: the cluster block's fields, and how the password reaches nodetool (stdin, an
owner-only file removed after the call) without being in argv, a message or the registry backup."""
from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.errors import InputError
from dmf.core.secrets import MASK, mask_document

PASSWORD = "s3cr3t-Jmx!$`\"'pw"
HOSTS = [{"address": "10.0.0.1"}]


def cluster(**fields) -> CassandraCluster:
    return CassandraCluster(hosts=HOSTS, **fields)


def test_jmx_credentials_come_in_pairs_in_one_line():
    with pytest.raises(InputError, match="sets jmx_password without jmx_username") as raised:
        cluster(jmx_password=SecretStr(PASSWORD))
    assert "\n" not in str(raised.value) and PASSWORD not in str(raised.value)
    with pytest.raises(InputError, match="sets jmx_username without jmx_password"):
        cluster(jmx_username="admin")
    assert cluster().jmx_username is None and cluster().jmx_password is None
    assert cluster(jmx_username="admin", jmx_password=SecretStr(PASSWORD)).jmx_username == "admin"


@pytest.mark.parametrize("username, password", [
    ("ad\nmin", "pw"), ("ad min", "pw"), ("", "pw"), ("admin", "p\nw"), ("admin", "p w"), ("admin", "p\tw"),
    ("admin", ""),
])
def test_what_nodetools_password_file_cannot_carry_is_refused(username, password):
    with pytest.raises(InputError, match="nodetool's password file format cannot carry") as raised:
        cluster(jmx_username=username, jmx_password=SecretStr(password))
    message = str(raised.value)
    assert "\n" not in message and (not password or password not in message)


def test_the_registry_backup_masks_the_jmx_password_and_keeps_the_user():
    block = cluster(jmx_username="admin", jmx_password=SecretStr(PASSWORD))
    document = mask_document(json.loads(block.model_dump_json()))
    assert document["jmx_password"] == MASK and document["jmx_username"] == "admin"
    # The raw value too, as another block type might hold it as a plain string.
    assert mask_document({"jmx_password": PASSWORD, "jmx_username": "admin"}) == \
        {"jmx_password": MASK, "jmx_username": "admin"}
    assert PASSWORD not in json.dumps(document)
