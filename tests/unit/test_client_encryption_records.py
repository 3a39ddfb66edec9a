"""What manifests say of client-side encryption: round trip, validation of what the bucket gives,
and the authentication a restore makes before downloading (key, plaintext sets, rewritten manifests
and schemas)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from dmf.core.client_encryption import (ENCRYPTION, Encrypted, Expected, authenticate, encryption_of,
                                        opened_schema, sealed, signed_schema, sort_authentic)
from dmf.core.errors import LayoutError, PermanentError
from dmf.core.keys import SetRef, schema_key
from dmf.core.manifest import FileEntry, Manifest, PlainFile
from dmf.encryption import OLD_SCHEMES, SCHEME, expected, key_id, mac_key

from .test_catalog import SHA, ts

OTHER_SHA = "cd" * 32
KEY = bytes(range(32))
KEY_ID = key_id(KEY)
MAC_KEY = mac_key(KEY)
WITH_KEY = Expected(SCHEME, KEY_ID, MAC_KEY, OLD_SCHEMES)
DATA = "ks/t-" + "0" * 32 + "/nb-1-big-Data.db"


def manifest(entries, extra=None, node="10.0.0.1") -> Manifest:
    ref = SetRef.snapshot(ts("20250101120000"), node)
    return Manifest(set=ref, files=tuple(entries), host=node, host_id="h", created_at=ts("20250101120000"),
                    extra=extra or {})


def encrypted_manifest(key: bytes = KEY, node="10.0.0.1") -> Manifest:
    entry = FileEntry(DATA, 1080, SHA, PlainFile(1024, OTHER_SHA))
    return sealed(manifest([entry], {"other": [1, "x"]}, node), Encrypted(SCHEME, key_id(key), 1 << 20),
                  mac_key(key))


def read_back(body: dict) -> Manifest:
    """What a reader gets from the bucket: the bytes parsed."""
    return Manifest.from_json(json.dumps(body))


def test_a_manifest_round_trips_its_record_and_mac_and_plain_sets_stay_as_they_were():
    written = encrypted_manifest()
    again = Manifest.from_json(written.to_json())
    assert again == written
    found = encryption_of(again, SCHEME)
    assert (found.scheme, found.key_id, found.chunk) == (SCHEME, KEY_ID, 1 << 20) and len(found.mac) == 64
    authenticate([again], WITH_KEY)
    plain = manifest([FileEntry(DATA, 5, SHA)])
    assert "plain" not in json.loads(plain.to_json())["files"][0]
    assert encryption_of(Manifest.from_json(plain.to_json()), SCHEME) is None


@pytest.mark.parametrize("damage", [
    lambda body: body["files"][0].pop("plain"),
    lambda body: body["files"][0]["plain"].update(sha256="nothex"),
    lambda body: body["files"][0]["plain"].update(size=-1),
    lambda body: body["extra"][ENCRYPTION].update(key_id="../../etc"),
    lambda body: body["extra"][ENCRYPTION].update(chunk="big"),
    lambda body: body["extra"][ENCRYPTION].pop("mac"),
    lambda body: body["extra"][ENCRYPTION].update(mac="zz" * 32),
    lambda body: body["extra"].pop(ENCRYPTION),  # plaintext records in a set said to be plain
])
def test_malformed_records_from_the_bucket_are_refused(damage):
    body = json.loads(encrypted_manifest().to_json())
    encryption_of(read_back(body), SCHEME)  # whole, it reads
    damage(body)
    with pytest.raises(LayoutError):
        encryption_of(read_back(body), SCHEME)


def test_another_scheme_is_refused_by_name_and_an_old_one_with_how_to_proceed():
    written = encrypted_manifest()
    future = dataclasses.replace(written, extra={ENCRYPTION: {**written.extra[ENCRYPTION], "scheme": "v9"}})
    with pytest.raises(PermanentError, match="'v9', which this dmf cannot read"):
        encryption_of(future, SCHEME)
    old = dataclasses.replace(written, extra={ENCRYPTION: {"scheme": "aes-256-gcm-chunked-v1", "key_id": KEY_ID,
                                                           "chunk": 1 << 20}})
    with pytest.raises(PermanentError, match="aes-256-gcm-chunked-v1 by an earlier dmf.*refused. Restore it with the "
                                             "dmf release that wrote it") as refused:
        authenticate([old], WITH_KEY)
    assert "\n" not in str(refused.value)


def test_the_key_is_checked_before_any_download():
    sets = [encrypted_manifest(), encrypted_manifest(node="10.0.0.2")]
    authenticate(sets, WITH_KEY)
    other = bytes(32)
    with pytest.raises(PermanentError, match=f"encrypted with key id {KEY_ID}, the repository block's "
                                             f"encryption_key is key id {key_id(other)}"):
        authenticate(sets, expected(other))
    with pytest.raises(PermanentError, match="client-side encrypted .* set encryption: client"):
        authenticate(sets, expected(None))
    authenticate([manifest([FileEntry(DATA, 5, SHA)])], expected(None))  # without a key, plaintext reads


def test_a_plaintext_set_under_encryption_client_is_refused_in_one_line():
    # What anyone with write access to the bucket can write: plaintext objects and a matching manifest.
    sets = [encrypted_manifest(), manifest([FileEntry(DATA, 5, SHA)], node="10.0.0.2")]
    with pytest.raises(PermanentError, match=r"^20250101120000/10\.0\.0\.2/snapshots/ is not client-side encrypted, "
                                             "and the repository block says encryption: client: refused") as refused:
        authenticate(sets, WITH_KEY)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("rewrite", [
    lambda body: body["files"][0].update(sha256=OTHER_SHA),          # another object swapped in
    lambda body: body["files"][0]["plain"].update(sha256=SHA),       # another plaintext
    lambda body: body["files"][0].update(path=DATA.replace("nb-1", "nb-2")),
    lambda body: body["files"].append({**body["files"][0], "path": DATA.replace("nb-1", "nb-3")}),
    lambda body: body.update(tokens=["42"]),
    lambda body: body.update(host="10.9.9.9"),
    lambda body: body["extra"].update(other=[2, "x"]),
    lambda body: body["extra"].update(added=True),
])
def test_a_rewritten_manifest_fails_authentication(rewrite):
    body = json.loads(encrypted_manifest().to_json())
    authenticate([read_back(body)], WITH_KEY)
    rewrite(body)
    with pytest.raises(PermanentError, match="manifest.json: manifest fails authentication"):
        authenticate([read_back(body)], WITH_KEY)


def test_a_manifest_sealed_under_another_key_with_its_key_id_forged_fails_authentication():
    forged = json.loads(encrypted_manifest(key=bytes(32)).to_json())
    forged["extra"][ENCRYPTION]["key_id"] = KEY_ID
    with pytest.raises(PermanentError, match="fails authentication"):
        authenticate([read_back(forged)], WITH_KEY)


def test_sort_authentic_keeps_the_trusted_and_names_the_others():
    good, plain = encrypted_manifest(), manifest([FileEntry(DATA, 5, SHA)], node="10.0.0.2")
    body = json.loads(encrypted_manifest(node="10.0.0.3").to_json())
    body["extra"][ENCRYPTION]["chunk"] = "big"
    trusted, refused = sort_authentic([good, plain, read_back(body)], WITH_KEY)
    assert trusted == [good]
    assert [m.set.node for m, _ in refused] == ["10.0.0.2", "10.0.0.3"]
    assert "not client-side encrypted" in refused[0][1] and "malformed" in refused[1][1]
    # Without a key nothing can be authenticated: verify and shipping read every manifest as before.
    assert sort_authentic([good, plain], expected(None)) == ([good, plain], [])


def test_a_schema_is_signed_for_its_key_and_a_rewritten_or_moved_one_is_refused():
    key = schema_key(ts("20250101120000"))
    text = "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy'};\n"
    stored = signed_schema(text, key, MAC_KEY)
    assert stored.startswith(text) and stored.splitlines()[-1].startswith("-- dmf-mac: ")
    assert opened_schema(stored, key, MAC_KEY) == text
    for forged, where in [(stored.replace("SimpleStrategy", "NetworkTopologyStrategy"), key),
                          (text, key),                                         # no MAC: written by anyone
                          (stored, schema_key(ts("20240101120000"))),          # another snapshot's
                          (signed_schema(text, key, mac_key(bytes(32))), key),  # another key's
                          (stored[:-3] + "é\n", key)]:
        with pytest.raises(PermanentError, match=f"^{where}: schema fails authentication"):
            opened_schema(forged, where, MAC_KEY)
