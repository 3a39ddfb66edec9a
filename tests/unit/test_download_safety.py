"""Downloads into a shared PATH: nothing below it is followed, everything made is owner-only, and the
removal after a restore touches only what the restore downloaded. Local only: tmp_path and moto's
in-process S3 (mock_aws), no server, no network."""
from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from moto import mock_aws

from dmf.core.errors import InputError
from dmf.download import Fetch, bytes_missing, check_destination, fetch_all, link_for_load, remove_downloads
from dmf.restore_plan import TableLoad
from dmf.storage import MIB, Storage, VerificationError

SNAPSHOT = "20250101120000"
REL = f"{SNAPSHOT}/10.0.0.1/full/ks/t"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")


@pytest.fixture(scope="module")
def storage():
    from prefect_aws import AwsCredentials
    from pydantic import SecretStr

    from dmf.blocks import S3Repository

    with mock_aws():
        repository = S3Repository(bucket="dmf-unit", part_size_mib=5, credentials=AwsCredentials(
            aws_access_key_id="k", aws_secret_access_key=SecretStr("s"), region_name="us-east-1"))
        repository.client().create_bucket(Bucket=repository.bucket)
        yield Storage(repository)


def put(storage: Storage, root: Path, relpath: str, data: bytes) -> Fetch:
    key = f"{SNAPSHOT}/10.0.0.1/snapshots/{relpath}"
    storage.s3.put_object(Bucket=storage.bucket, Key=key, Body=data)
    return Fetch(key, root / relpath, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def root(tmp_path) -> Path:
    made = tmp_path / "restore"
    made.mkdir()
    return made


@pytest.fixture
def victim(tmp_path) -> Path:
    """Another user's file outside PATH that an attacker would like dmf to overwrite."""
    path = tmp_path / "victim"
    path.write_bytes(b"precious")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_planted_part_symlink_does_not_redirect_the_write(storage, root, victim):
    data = os.urandom(6 * MIB + 123)  # two byte ranges
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", data)
    f.dest.parent.mkdir(parents=True, mode=0o700)
    (f.dest.parent / "nb-1-big-Data.db.part").symlink_to(victim)
    assert fetch_all(storage, root, [f], parallel=4) == 1
    assert victim.read_bytes() == b"precious"
    assert f.dest.read_bytes() == data and not f.dest.is_symlink()
    assert sorted(p.name for p in f.dest.parent.iterdir()) == ["nb-1-big-Data.db"]


def test_a_symlink_under_the_final_name_is_replaced_never_followed(storage, root, victim):
    f = put(storage, root, f"{REL}/nb-1-big-TOC.txt", b"Data.db\n")
    f.dest.parent.mkdir(parents=True, mode=0o700)
    f.dest.symlink_to(victim)
    assert bytes_missing([f]) == f.size  # a link is not a downloaded file
    assert fetch_all(storage, root, [f], parallel=2) == 1
    assert victim.read_bytes() == b"precious" and f.dest.read_bytes() == b"Data.db\n" and not f.dest.is_symlink()


def test_created_files_are_0600_and_directories_0700(storage, root):
    f = put(storage, root, f"{REL}/.idx/nb-1-big-Data.db", b"x" * 100)
    fetch_all(storage, root, [f], parallel=2)
    assert mode(f.dest) == 0o600
    made = [root.joinpath(*f.dest.relative_to(root).parts[:n]) for n in range(1, len(f.dest.relative_to(root).parts))]
    assert [mode(d) for d in made] == [0o700] * len(made)


@pytest.mark.parametrize("component", [SNAPSHOT, f"{SNAPSHOT}/10.0.0.1/full"])
def test_a_symlinked_directory_below_path_is_refused(storage, root, tmp_path, component):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", b"x" * 100)
    link = root / component
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError) as info:
        fetch_all(storage, root, [f], parallel=2)
    assert str(info.value).startswith(f"refusing {link}: it is a symbolic link; below PATH {root}")
    assert list(elsewhere.iterdir()) == []


def test_a_file_where_a_directory_belongs_is_refused(storage, root):
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", b"x" * 100)
    (root / SNAPSHOT).write_bytes(b"")
    with pytest.raises(InputError, match="it is not a directory"):
        fetch_all(storage, root, [f], parallel=2)


@as_root
def test_a_directory_of_another_user_below_path_is_refused(storage, root):
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", b"x" * 100)
    (root / SNAPSHOT).mkdir(mode=0o777)
    os.chown(root / SNAPSHOT, 65534, 65534)
    with pytest.raises(InputError, match=r"it is owned by another user \(uid 65534\)"):
        fetch_all(storage, root, [f], parallel=2)


def test_a_rerun_skips_verified_files_and_replaces_a_corrupt_one(storage, root):
    good = put(storage, root, f"{REL}/nb-1-big-Data.db", b"a" * 1000)
    other = put(storage, root, f"{REL}/nb-1-big-Index.db", b"b" * 1000)
    assert fetch_all(storage, root, [good, other], parallel=2) == 2
    other.dest.write_bytes(b"c" * 1000)
    assert fetch_all(storage, root, [good, other], parallel=2) == 1
    assert other.dest.read_bytes() == b"b" * 1000


def test_a_download_that_fails_verification_leaves_nothing_behind(storage, root):
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", b"a" * 1000)
    wrong = Fetch(f.key, f.dest, f.size, "0" * 64)
    with pytest.raises(VerificationError):
        fetch_all(storage, root, [wrong], parallel=2)
    assert list(f.dest.parent.iterdir()) == []


def test_path_and_missing_parents_are_made_owner_only(tmp_path):
    root = tmp_path / "a" / "b" / "restore"
    check_destination(root, needed=0)
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", root)] == [0o700] * 3
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    check_destination(existing, needed=0)
    assert mode(existing) == 0o755  # an existing PATH is left as it is


@pytest.mark.parametrize("shared_mode, who", [(0o777, "every user"), (0o775, "its group"), (0o770, "its group")])
def test_a_path_others_can_rearrange_is_refused(tmp_path, shared_mode, who):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, shared_mode)
    with pytest.raises(InputError, match=f"PATH {shared} is writable by {who} .*chmod go-w"):
        check_destination(shared, needed=0)
    os.chmod(shared, 0o1000 | shared_mode)  # as /tmp: only an entry's owner may rename or remove it
    check_destination(shared, needed=0)


def test_a_path_inside_a_folder_others_can_rearrange_is_refused(tmp_path):
    """Whoever can rename PATH itself can put another folder, with other files, in its place."""
    team = tmp_path / "team"
    (team / "restore").mkdir(parents=True)
    os.chmod(team, 0o2770)  # setgid is not sticky: group members may rename each other's entries
    with pytest.raises(InputError, match=f"is inside {team}, which is writable by its group"):
        check_destination(team / "restore", needed=0)
    with pytest.raises(InputError, match=f"is inside {team}, which is writable by its group"):
        check_destination(team / "restore" / "missing", needed=0)
    assert not (team / "restore" / "missing").exists()  # refused before anything is made
    os.chmod(team, 0o750)
    check_destination(team / "restore", needed=0)


def test_a_group_writable_directory_below_path_is_refused(storage, root):
    """A folder left group-writable below PATH (by hand, or by an older dmf) would let a group
    member swap a verified SSTable for another before it is loaded."""
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", b"x" * 100)
    (root / SNAPSHOT).mkdir(mode=0o700)
    os.chmod(root / SNAPSHOT, 0o770)
    with pytest.raises(InputError, match=rf"{root / SNAPSHOT}: it is writable by its group \(mode 0770\)"):
        fetch_all(storage, root, [f], parallel=2)
    assert not f.dest.exists()


@as_root
def test_a_path_of_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(InputError, match=r"belongs to another user \(uid 65534\)"):
        check_destination(theirs, needed=0)


def test_removal_takes_only_the_downloads_and_the_directories_they_leave_empty(storage, root):
    fetches = [put(storage, root, f"{REL}/nb-1-big-Data.db", b"a" * 10),
               put(storage, root, f"{REL}/.idx/nb-1-big-Data.db", b"b" * 10),
               put(storage, root, f"{SNAPSHOT}/10.0.0.2/full/ks/t/nb-1-big-Data.db", b"c" * 10)]
    commitlog = put(storage, root, "cassandra_commitlogs/4a1a7505/CommitLog-7-1.log", b"d" * 10)
    fetch_all(storage, root, [*fetches, commitlog], parallel=2)
    mine = root / SNAPSHOT / "10.0.0.2" / "notes.txt"
    mine.write_text("the operator's")
    dirs = sorted({p for f in fetches for p in f.dest.parents if root in p.parents}, key=lambda d: -len(d.parts))
    assert remove_downloads(root, [f.dest for f in fetches], dirs) == 3
    assert not (root / SNAPSHOT / "10.0.0.1").exists()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        f"{SNAPSHOT}/10.0.0.2/notes.txt", "cassandra_commitlogs/4a1a7505/CommitLog-7-1.log"]
    assert remove_downloads(root, [f.dest for f in fetches], dirs) == 0  # a rerun of the removal is harmless


def test_removal_does_not_follow_a_directory_swapped_for_a_symlink(storage, root, tmp_path):
    f = put(storage, root, f"{REL}/nb-1-big-Data.db", b"a" * 10)
    fetch_all(storage, root, [f], parallel=2)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "10.0.0.1/full/ks/t").mkdir(parents=True)
    (elsewhere / "10.0.0.1/full/ks/t/nb-1-big-Data.db").write_bytes(b"theirs")
    os.rename(root / SNAPSHOT, tmp_path / "moved")
    (root / SNAPSHOT).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="it is a symbolic link"):
        remove_downloads(root, [f.dest], [f.dest.parent])
    assert (elsewhere / "10.0.0.1/full/ks/t/nb-1-big-Data.db").read_bytes() == b"theirs"


def test_an_encrypted_file_is_placed_only_decrypted_and_authenticated(storage, root, victim):
    from pydantic import SecretStr

    from dmf.core.manifest import PlainFile
    from dmf.encryption import EncryptionError, encrypt_chunks, generate_key, parse_key

    key = parse_key(generate_key())
    plain = os.urandom(6 * MIB + 7)
    key_of = put(storage, root, f"{REL}/nb-2-big-Data.db", b"").key
    f = put(storage, root, f"{REL}/nb-2-big-Data.db", b"".join(encrypt_chunks([plain], key, bound_to=key_of)))
    f = Fetch(f.key, f.dest, f.size, f.sha256, PlainFile(len(plain), hashlib.sha256(plain).hexdigest()))
    f.dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (f.dest.parent / "nb-2-big-Data.db.plain.part").symlink_to(victim)  # planted: not followed
    encrypted = storage.repository.model_copy(update={"encryption": "client",
                                                      "encryption_key": SecretStr(generate_key())})
    with pytest.raises(EncryptionError, match=f"{f.key}: authentication failed"):  # another key
        fetch_all(Storage(encrypted), root, [f], parallel=2)
    assert not f.dest.exists() and victim.read_bytes() == b"precious"
    right = storage.repository.model_copy(update={"encryption": "client",
                                                  "encryption_key": SecretStr(base64.b64encode(key).decode())})
    assert fetch_all(Storage(right), root, [f], parallel=2) == 1
    assert f.dest.read_bytes() == plain and mode(f.dest) == 0o600
    assert sorted(p.name for p in f.dest.parent.iterdir() if p.name.startswith("nb-2")) == ["nb-2-big-Data.db"]
    assert fetch_all(Storage(right), root, [f], parallel=2) == 0  # kept: it matches the plaintext record


def test_a_table_load_folder_holds_exactly_this_plan_s_links_to_the_verified_files(storage, root):
    """The load folder is refilled from scratch: a file left there by an earlier attempt (another
    --time) would otherwise be streamed too. The links are the verified files themselves, not copies."""
    a = put(storage, root, f"{REL}/nb-1-big-Data.db", b"a" * 100)
    b = put(storage, root, f"{SNAPSHOT}/10.0.0.2/full/ks/t/nb-1-big-Data.db", b"b" * 100)
    fetch_all(storage, root, [a, b], parallel=2)
    load = TableLoad("ks", "t", root / SNAPSHOT / ".load" / "ks" / "t",
                     ((a.dest, "nb-1-big-Data.db"), (b.dest, "nb-2-big-Data.db")), 2)
    link_for_load(root, load)
    load.directory.joinpath("nb-9-big-Data.db").write_bytes(b"stale")
    link_for_load(root, load)
    assert sorted(p.name for p in load.directory.iterdir()) == ["nb-1-big-Data.db", "nb-2-big-Data.db"]
    assert os.path.samefile(load.directory / "nb-2-big-Data.db", b.dest)
    assert mode(load.directory) == 0o700


def test_a_table_load_folder_follows_no_planted_link(storage, root, victim):
    a = put(storage, root, f"{REL}/nb-1-big-Data.db", b"a" * 100)
    fetch_all(storage, root, [a], parallel=2)
    (root / SNAPSHOT / ".load").mkdir(mode=0o700)
    (root / SNAPSHOT / ".load" / "ks").symlink_to(victim.parent)
    load = TableLoad("ks", "t", root / SNAPSHOT / ".load" / "ks" / "t", ((a.dest, "nb-1-big-Data.db"),), 1)
    with pytest.raises(InputError, match="it is a symbolic link"):
        link_for_load(root, load)
    assert victim.read_bytes() == b"precious"
