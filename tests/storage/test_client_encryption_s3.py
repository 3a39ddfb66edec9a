"""Client-side encryption's authentication on moto's S3, through dmf's own writes and reads: what an
attacker with write access to the bucket can put there (a plaintext set, a rewritten manifest, an
object copied from another key, a rewritten schema) is refused where the restore, verify and
commit-log shipping read it."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import timedelta

import pytest

from dmf.core.client_encryption import authenticate
from dmf.core.errors import PermanentError
from dmf.core.keys import SetRef, schema_key
from dmf.core.manifest import FileEntry, Manifest, PlainFile
from dmf.core.timestamps import parse_ts
from dmf.cql import NodeFacts
from dmf.download import Fetch, fetch_all
from dmf.encryption import EncryptionError, encrypt_chunks, encrypted_size, expected, generate_key
from dmf.repository import Repository
from dmf.ssh import RemoteFile
from dmf.storage import Storage
from dmf.tasks.commitlogs import already_shipped
from dmf.tasks.upload import Uploaded, seal_set
from dmf.verify import read_manifests

from .helpers import moto_repository

T0 = parse_ts("20250101000000")
HOST, HOST_ID = "10.0.0.1", "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b"
DATA = "ks/events-" + "0" * 32 + "/nb-1-big-Data.db"
SEGMENT = "CommitLog-7-1.log"


@pytest.fixture()
def repo():
    with moto_repository("dmf-client-encryption", encryption="client", encryption_key=generate_key()) as repo:
        yield repo


def key_of(repo: Repository) -> bytes:
    return repo.storage.repository.client_key()


def seal(repo: Repository, ref: SetRef, files: dict[str, bytes]) -> Manifest:
    """As a backup under encryption: client writes a set: each object encrypted for its key, then the
    manifest sealed by the task that seals sets."""
    entries = []
    for relpath, plain in files.items():
        key = ref.file_key(relpath)
        stored = repo.storage.upload_stream(key, encrypt_chunks([plain], key_of(repo), bound_to=key),
                                            encrypted_size(len(plain)))
        entries.append(FileEntry(relpath, stored.size, stored.sha256,
                                 PlainFile(len(plain), hashlib.sha256(plain).hexdigest())))
    facts = NodeFacts(HOST, HOST_ID, ("42",), "4.1.5", "s")
    return seal_set.fn(repo.storage.repository, ref, Uploaded(entries, 0.0, 0.0), facts, "ks", (HOST,))


def plant_plaintext(repo: Repository, ref: SetRef, files: dict[str, bytes]) -> None:
    """What anyone with write access to the bucket can write: plaintext objects and a matching manifest."""
    entries = []
    for relpath, data in files.items():
        stored = repo.storage.put_bytes(ref.file_key(relpath), data)
        entries.append(FileEntry(relpath, stored.size, stored.sha256))
    repo.write_manifest(Manifest(set=ref, files=tuple(entries), host=HOST, host_id=HOST_ID, created_at=ref.time,
                                 db_target="ks", hosts=(HOST,)))


def test_a_sealed_set_reads_back_authentic_and_planted_or_rewritten_ones_are_refused(repo):
    full, incr = SetRef.snapshot(T0, HOST), SetRef.incremental(T0, HOST, T0 + timedelta(hours=1))
    written = seal(repo, full, {DATA: os.urandom(3000)})
    assert repo.read_manifest(full) == written
    authenticate([repo.read_manifest(full)], expected(key_of(repo)))  # what a restore checks first

    plant_plaintext(repo, incr, {DATA.replace("nb-1", "nb-2"): b"INSERT evil"})
    with pytest.raises(PermanentError, match=f"^{incr.prefix} is not client-side encrypted, and the repository "
                                             "block says encryption: client: refused"):
        authenticate([repo.read_manifest(full), repo.read_manifest(incr)], expected(key_of(repo)))

    # The full's manifest rewritten to name another (validly encrypted) object's checksum.
    body = json.loads(repo.storage.get_bytes(full.manifest_key))
    body["files"][0]["sha256"] = hashlib.sha256(b"other").hexdigest()
    repo.storage.put_bytes(full.manifest_key, json.dumps(body).encode())
    with pytest.raises(PermanentError, match=f"^{full.manifest_key}: manifest fails authentication"):
        authenticate([repo.read_manifest(full)], expected(key_of(repo)))

    # backup verify reads the same manifests: both are damage, named, and their entries not trusted.
    trusted, findings = read_manifests(repo, [full, incr])
    assert trusted == []
    assert sorted((f.key, f.problem) for f in findings) == sorted([(full.manifest_key, "manifest"),
                                                                   (incr.manifest_key, "manifest")])


def test_an_object_copied_from_another_key_fails_authentication_when_decrypted(repo, tmp_path):
    # Defence in depth under the manifest MAC: even with its checksum accepted, the copy does not decrypt.
    older, newer = SetRef.snapshot(T0, HOST), SetRef.snapshot(T0 + timedelta(days=1), HOST)
    plain = os.urandom(5000)
    seal(repo, older, {DATA: plain})
    stolen = repo.storage.get_bytes(older.file_key(DATA))
    swapped = newer.file_key(DATA)
    repo.storage.put_bytes(swapped, stolen)
    fetch = Fetch(swapped, tmp_path / DATA, len(stolen), hashlib.sha256(stolen).hexdigest(),
                  PlainFile(len(plain), hashlib.sha256(plain).hexdigest()))
    with pytest.raises(EncryptionError, match=f"^{swapped}: authentication failed"):
        fetch_all(repo.storage, tmp_path, [fetch], parallel=1)
    assert not (tmp_path / DATA).exists()
    original = Fetch(older.file_key(DATA), tmp_path / DATA, fetch.size, fetch.sha256, fetch.plain)
    assert fetch_all(repo.storage, tmp_path, [original], parallel=1) == 1
    assert (tmp_path / DATA).read_bytes() == plain


def test_the_schema_is_signed_and_a_rewritten_or_unsigned_one_is_refused(repo):
    schema = "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};\n"
    repo.write_schema(T0, schema)
    assert repo.read_schema(T0) == schema
    stored = repo.storage.get_bytes(schema_key(T0))
    for forged in (stored.replace(b"'replication_factor': 1", b"'replication_factor': 3"), schema.encode(),
                   b"\xff\xfe"):
        repo.storage.put_bytes(schema_key(T0), forged)
        with pytest.raises(PermanentError, match=f"^{schema_key(T0)}: "):
            repo.read_schema(T0)
    # Copied from another snapshot, where it was validly signed: bound to its key, refused here.
    other = T0 + timedelta(days=1)
    repo.storage.put_bytes(schema_key(other), stored)
    with pytest.raises(PermanentError, match="schema fails authentication"):
        repo.read_schema(other)
    plain = Repository(Storage(repo.storage.repository.model_copy(update={"encryption": "none",
                                                                          "encryption_key": None})))
    plain.write_schema(T0, schema)
    assert plain.storage.get_bytes(schema_key(T0)) == schema.encode() and plain.read_schema(T0) == schema


def test_commit_log_shipping_never_counts_a_forged_batch_as_shipped(repo, caplog):
    # A forged batch naming the node's archived segment would get it deleted from the node unshipped.
    archived = [RemoteFile(SEGMENT, 1024, T0.timestamp() + 60)]
    plant_plaintext(repo, SetRef.commitlog(T0, HOST_ID, T0 + timedelta(hours=1)), {SEGMENT: os.urandom(1024)})
    logger = logging.getLogger("dmf.test")
    with caplog.at_level(logging.WARNING, logger="dmf.test"):
        assert already_shipped(repo.storage, HOST_ID, archived, logger) == {}
    assert "is not client-side encrypted" in caplog.text and "not counted as shipped" in caplog.text
    seal(repo, SetRef.commitlog(T0, HOST_ID, T0 + timedelta(hours=2)), {SEGMENT: os.urandom(1024)})
    assert already_shipped(repo.storage, HOST_ID, archived, logger) == {SEGMENT: 1024}
