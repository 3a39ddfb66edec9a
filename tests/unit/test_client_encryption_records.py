"""What manifests say of client-side encryption: round trip, validation of what the bucket gives,
and the key check a restore makes before downloading."""
from __future__ import annotations

import dataclasses
import json

import pytest

from dmf.core.client_encryption import ENCRYPTION, Encrypted, check_key, encryption_of, encryption_record
from dmf.core.errors import LayoutError, PermanentError
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest, PlainFile
from dmf.encryption import SCHEME

from .test_catalog import SHA, ts

OTHER_SHA = "ab" * 32
KEY_ID = "0123456789abcdef"
DATA = "ks/t-" + "0" * 32 + "/nb-1-big-Data.db"


def manifest(entries, extra) -> Manifest:
    ref = SetRef.snapshot(ts("20250101120000"), "10.0.0.1")
    return Manifest(set=ref, files=tuple(entries), host="10.0.0.1", host_id="h", created_at=ts("20250101120000"),
                    extra=extra)


def encrypted_manifest(key_id: str = KEY_ID) -> Manifest:
    entry = FileEntry(DATA, 1080, SHA, PlainFile(1024, OTHER_SHA))
    return manifest([entry], {ENCRYPTION: encryption_record(Encrypted(SCHEME, key_id, 1 << 20))})


def test_a_manifest_round_trips_its_plaintext_records_and_plain_sets_stay_as_they_were():
    sealed = encrypted_manifest()
    again = Manifest.from_json(sealed.to_json())
    assert again == sealed and encryption_of(again, SCHEME) == Encrypted(SCHEME, KEY_ID, 1 << 20)
    plain = manifest([FileEntry(DATA, 5, SHA)], {})
    assert "plain" not in json.loads(plain.to_json())["files"][0]
    assert encryption_of(Manifest.from_json(plain.to_json()), SCHEME) is None


@pytest.mark.parametrize("damage", [
    lambda body: body["files"][0].pop("plain"),
    lambda body: body["files"][0]["plain"].update(sha256="nothex"),
    lambda body: body["files"][0]["plain"].update(size=-1),
    lambda body: body["extra"][ENCRYPTION].update(key_id="../../etc"),
    lambda body: body["extra"][ENCRYPTION].update(chunk="big"),
    lambda body: body["extra"].pop(ENCRYPTION),  # plaintext records in a set said to be plain
])
def test_malformed_records_from_the_bucket_are_refused(damage):
    body = json.loads(encrypted_manifest().to_json())
    encryption_of(Manifest.from_json(json.dumps(body)), SCHEME)  # whole, it reads
    damage(body)
    with pytest.raises(LayoutError):
        encryption_of(Manifest.from_json(json.dumps(body)), SCHEME)


def test_another_scheme_is_refused_by_name():
    sealed = encrypted_manifest()
    future = dataclasses.replace(sealed, extra={ENCRYPTION: {**sealed.extra[ENCRYPTION], "scheme": "v9"}})
    with pytest.raises(PermanentError, match="'v9', which this dmf cannot read"):
        encryption_of(future, SCHEME)


def test_the_key_is_checked_before_any_download():
    sets = [manifest([FileEntry(DATA, 5, SHA)], {}), encrypted_manifest()]
    check_key(sets, SCHEME, KEY_ID)
    with pytest.raises(PermanentError, match=f"encrypted with key id {KEY_ID}, the repository block's "
                                             "encryption_key is key id fedcba9876543210"):
        check_key(sets, SCHEME, "fedcba9876543210")
    with pytest.raises(PermanentError, match="client-side encrypted .* set encryption: client"):
        check_key(sets, SCHEME, None)
    check_key(sets[:1], SCHEME, None)  # plaintext sets need no key
