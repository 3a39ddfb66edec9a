"""Parallel, streamed, verified downloads from the bucket into a local directory.

Each file is written to `<name>.part` (a large one as parallel byte ranges), checked against
its manifest entry (size and SHA-256) and only then renamed into place: a file present under
its final name is a verified one, which is what lets a rerun skip it and resume.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from dmf.core.errors import DmfError, InputError
from dmf.storage import MIB, Storage, VerificationError

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Fetch:
    key: str
    dest: Path
    size: int
    sha256: str


def safe_join(root: Path, *parts: str) -> Path:
    """root/parts, refusing anything that would land outside root."""
    path = root.joinpath(*parts).resolve()
    if root.resolve() not in path.parents:
        raise DmfError(f"refusing to write outside {root}: {'/'.join(parts)}")
    return path


def check_destination(root: Path, needed: int) -> None:
    """PATH must be a writable directory with room for what is still to fetch."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"PATH {root} cannot be created: {exc.strerror}") from None
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise InputError(f"PATH {root} is not a writable directory")
    free = shutil.disk_usage(root).free
    if free < needed:
        raise InputError(f"PATH {root} has {free / 2**30:.2f} GiB free; the restore needs {needed / 2**30:.2f} GiB")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def is_done(fetch: Fetch) -> bool:
    return fetch.dest.exists() and fetch.dest.stat().st_size == fetch.size and _sha256_of(fetch.dest) == fetch.sha256


def _write_range(storage: Storage, fetch: Fetch, part: Path, start: int, end: int,
                 progress: Progress | None) -> None:
    with open(part, "r+b") as out:
        out.seek(start)
        for chunk in storage.iter_object(fetch.key, byte_range=(start, end)):
            out.write(chunk)
            if progress:
                progress(len(chunk))


def fetch_one(storage: Storage, fetch: Fetch, ranges: Executor, progress: Progress | None = None) -> bool:
    """Downloads and verifies one file; returns False when it was already there and verified.

    A file larger than a part comes as byte ranges in parallel on `ranges` (one GET stream per
    file is slower than S3 serves), written in place, then hashed from the page cache."""
    if is_done(fetch):
        if progress:
            progress(fetch.size)
        return False
    fetch.dest.parent.mkdir(parents=True, exist_ok=True)
    part = fetch.dest.with_name(fetch.dest.name + ".part")
    with open(part, "wb") as out:
        out.truncate(fetch.size)
    part_size = storage.repository.part_size_mib * MIB
    futures = [ranges.submit(_write_range, storage, fetch, part, start, min(start + part_size, fetch.size), progress)
               for start in range(0, fetch.size, part_size)]
    try:
        for future in futures:
            future.result()
    except BaseException:
        for future in futures:
            future.cancel()
        wait(futures)
        part.unlink(missing_ok=True)
        raise
    size, sha256 = part.stat().st_size, _sha256_of(part)
    if size != fetch.size or sha256 != fetch.sha256:
        part.unlink(missing_ok=True)
        raise VerificationError(f"s3://{storage.bucket}/{fetch.key}: downloaded {size} bytes with SHA-256 "
                                f"{sha256[:12]}…, manifest says {fetch.size} bytes, {fetch.sha256[:12]}…")
    os.replace(part, fetch.dest)
    return True


def fetch_all(storage: Storage, fetches: list[Fetch], parallel: int, progress: Progress | None = None) -> int:
    """Downloads everything in parallel (largest first); returns how many files were transferred."""
    with ThreadPoolExecutor(parallel, thread_name_prefix="range") as ranges, \
            ThreadPoolExecutor(parallel, thread_name_prefix="down") as files:
        results = list(files.map(lambda f: fetch_one(storage, f, ranges, progress),
                                 sorted(fetches, key=lambda f: -f.size)))
    return sum(results)
