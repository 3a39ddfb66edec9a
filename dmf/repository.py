"""The backup repository: the bucket layout (dmf.core.keys) over S3 storage (dmf.storage).

Reads the history from keys and manifests only, never from file listings. A run reads the
snapshots newest first and stops at the one it needs; `backup list` reads the whole history
through the catalog index (dmf.core.index): per snapshot one listing that follows sets, not files,
and one index object, plus the manifests the index lacks.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError

from dmf.core.catalog import Catalog, Group, SetInfo
from dmf.core.errors import InputError, LayoutError
from dmf.core.index import (
    IndexEntry, ManifestStamp, SnapshotListing, format_index, parse_index, reconcile, set_infos, summarise,
)
from dmf.core.keys import SetKind, SetRef, catalog_key, parse_set_prefix
from dmf.core.manifest import Manifest
from dmf.core.timestamps import format_ts, parse_ts
from dmf.storage import Storage, StorageError

log = logging.getLogger(__name__)

ALL_KINDS = frozenset(SetKind)
DATA_KINDS = frozenset({SetKind.SNAPSHOT, SetKind.INCREMENTAL})
# Below a node's prefix every data key has a '-' inside its set (`<ks>/<table>-<id>/…`, `CommitLog-…`)
# and no manifest key has one (`snapshots/manifest.json`, `<kind>/<ts>/manifest.json`): listed with it
# as the delimiter, a set's files fold into one common prefix per table and its manifest is listed as is.
FOLD = "-"
# botocore parses each listed object's LastModified with dateutil: ~85% of its parsing cost per
# listed manifest (256 → 39 µs measured), for a field the catalog never reads. The catalog's own
# listings drop it from the response before botocore parses it (the hook botocore's own S3 handlers
# use); other listings on the same client keep it.
_LAST_MODIFIED = re.compile(rb"<LastModified>[^<]*</LastModified>")
_catalog_listing = threading.local()


def _snapshot_time(prefix: str) -> datetime | None:
    """The time of a top-level `<snapshot_ts>/` prefix; None for anything else (e.g. registry/)."""
    try:
        return parse_ts(prefix.rstrip("/"), name="snapshot_ts")
    except InputError:
        return None


class Repository:
    def __init__(self, storage: Storage, parallel: int = 16):
        self.storage = storage
        self.parallel = parallel
        self._fold_refused = False

    def snapshot_times(self) -> list[datetime]:
        """The time of every `<snapshot_ts>/` prefix, whatever it holds."""
        return sorted(ts for prefix in self.storage.list_prefixes("") if (ts := _snapshot_time(prefix)) is not None)

    def set_prefixes(self, start: datetime | None = None, end: datetime | None = None,
                     kinds: Collection[SetKind] = ALL_KINDS, node: str | None = None) -> list[SetRef]:
        """Every set of `kinds` (of one `node`, a host address or host ID, if given) whose time is in
        [start, end], from delimiter listings only.

        Timestamps are fixed-width, so key order is time order: listings of increments and
        commit-log batches start after `start` (S3's StartAfter) instead of walking all history.
        """
        return self._sets_under(self.storage.list_prefixes(""), start, end, kinds, node)

    def _sets_under(self, snapshot_prefixes: Iterable[str], start: datetime | None, end: datetime | None,
                    kinds: Collection[SetKind], node: str | None) -> list[SetRef]:
        refs: list[SetRef] = []
        for snapshot_prefix in snapshot_prefixes:
            snapshot_time = _snapshot_time(snapshot_prefix)
            if snapshot_time is None or (end is not None and snapshot_time > end):
                continue  # not a snapshot, or every set under it is later still
            node_prefixes = ([f"{snapshot_prefix}{node}/"] if node is not None
                             else self.storage.list_prefixes(snapshot_prefix))
            for node_prefix in node_prefixes:
                for kind_prefix in self.storage.list_prefixes(node_prefix):
                    try:
                        kind = SetKind(kind_prefix.rstrip("/").rsplit("/", 1)[-1])
                    except ValueError:
                        continue
                    if kind not in kinds:
                        continue
                    if kind is SetKind.SNAPSHOT:
                        candidates = [kind_prefix]
                    else:
                        after = kind_prefix + format_ts(start) if start is not None else ""
                        candidates = self.storage.list_prefixes(kind_prefix, start_after=after)
                    for candidate in candidates:
                        try:
                            ref = parse_set_prefix(candidate)
                        except LayoutError:
                            continue  # not ours; `backup list` shows only the layout
                        if (start is None or ref.time >= start) and (end is None or ref.time <= end):
                            refs.append(ref)
        return refs

    def snapshot_catalog(self, snapshot_ts: datetime, kinds: Collection[SetKind] = DATA_KINDS) -> Catalog:
        """The sets of `kinds` under one snapshot, manifests read."""
        return self._catalog_of(self._sets_under([f"{format_ts(snapshot_ts)}/"], None, None, kinds, None))

    def active_catalog(self, since: datetime, kinds: Collection[SetKind] = DATA_KINDS) -> Catalog:
        """Every set of `kinds` of the snapshots that hold one written at or after `since`: the chains
        still growing then, whole. Older snapshots cost a few listings each and no manifest read."""
        active = sorted({ref.snapshot_ts for ref in self.set_prefixes(start=since, kinds=kinds)})
        return self._catalog_of(self._sets_under([f"{format_ts(ts)}/" for ts in active], None, None, kinds, None))

    def read_manifest(self, ref: SetRef) -> Manifest | None:
        data = self.storage.get_bytes(ref.manifest_key, missing_ok=True)
        return None if data is None else Manifest.from_json(data, expected=ref)

    def _catalog_of(self, refs: list[SetRef]) -> Catalog:
        with ThreadPoolExecutor(self.parallel) as pool:
            manifests = list(pool.map(self.read_manifest, refs))
        return Catalog.build(SetInfo(ref, m) for ref, m in zip(refs, manifests))

    def newest_first(self, end: datetime | None = None,
                     kinds: Collection[SetKind] = DATA_KINDS) -> Iterator[Catalog]:
        """One catalog per snapshot (its sets of `kinds` up to `end`), the newest snapshot first:
        callers stop at the first that serves them, so a run does not pay for the whole history."""
        for snapshot_prefix in sorted(self.storage.list_prefixes(""), reverse=True):
            refs = self._sets_under([snapshot_prefix], None, end, kinds, None)
            if refs:
                yield self._catalog_of(refs)

    def latest_full_of_each(self, hosts: Iterable[str]) -> dict[str, Group | None]:
        """Per host, the newest complete full snapshot that includes it: one newest-first walk for all."""
        found: dict[str, Group | None] = dict.fromkeys(hosts)
        for catalog in self.newest_first(kinds={SetKind.SNAPSHOT}):
            for host in [h for h, full in found.items() if full is None]:
                found[host] = catalog.latest_full_any([host])
            if all(found.values()):
                break
        return found

    def catalog(self, start: datetime | None = None, end: datetime | None = None,
                kinds: Collection[SetKind] = ALL_KINDS, node: str | None = None) -> Catalog:
        return self._catalog_of(self.set_prefixes(start, end, kinds, node))

    def listing_catalog(self, up_to: datetime | None = None, use_index: bool = True) -> Catalog:
        """Every set of every snapshot taken up to `up_to`, as `backup list` shows them: summaries, not
        whole manifests (Group.manifests refuses), and a malformed manifest leaves its set incomplete
        with a SetInfo.problem instead of failing the listing.

        With the index: per snapshot one folded listing and one index object, then only the manifests
        the index lacks, then the index rewritten where it changed. Without: the delimiter walk and
        every manifest, one GET per set (the reference the index is tested against).
        """
        snapshots = sorted(ts for prefix in self.storage.list_prefixes("")
                           if (ts := _snapshot_time(prefix)) is not None and (up_to is None or ts <= up_to))
        with ThreadPoolExecutor(self.parallel) as pool:
            if not use_index:
                refs = self._sets_under([f"{format_ts(ts)}/" for ts in snapshots], None, None, ALL_KINDS, None)
                return Catalog.build(pool.map(self._summarise, refs))
            listings = list(pool.map(self._list_snapshot, snapshots))
            stored = list(pool.map(self._read_index, snapshots))
            fresh: list[dict[str, IndexEntry]] = []
            unread: list[tuple[int, str]] = []  # (snapshot's position, set prefix)
            for position, (entries, listing) in enumerate(zip(stored, listings)):
                valid, prefixes = reconcile(entries, listing)
                fresh.append(valid)
                unread.extend((position, prefix) for prefix in prefixes)
            read = pool.map(self._read_entry, [listings[i] for i, _ in unread], [prefix for _, prefix in unread])
            for (position, prefix), entry in zip(unread, read):
                if entry is not None:
                    fresh[position][prefix] = entry
            changed = [(ts, entries) for ts, entries, old, listing in zip(snapshots, fresh, stored, listings)
                       if listing.sets and entries != old]
            list(pool.map(self._write_index, changed))
        return Catalog.build(info for listing, entries in zip(listings, fresh) for info in set_infos(listing, entries))

    def _summarise(self, ref: SetRef) -> SetInfo:
        data = self.storage.get_bytes(ref.manifest_key, missing_ok=True)
        return SetInfo(ref) if data is None else summarise(ref, data)

    def _list_snapshot(self, snapshot_ts: datetime) -> SnapshotListing:
        listing = SnapshotListing()
        with _last_modified_unparsed(self.storage.s3):
            for node_prefix in self.storage.list_prefixes(f"{format_ts(snapshot_ts)}/"):
                for key, stamp in self._folded_keys(node_prefix):
                    listing.add(key, stamp)
        return listing

    def _folded_keys(self, node_prefix: str) -> list[tuple[str, ManifestStamp | None]]:
        """The keys under a node's prefix with their stamps, each table's files folded into one common
        prefix (stamp None). A store that refuses the FOLD delimiter, or folds elsewhere (at '/'),
        gets a plain listing: the same sets and manifests, at a cost that follows files."""
        if not self._fold_refused:
            found: list[tuple[str, ManifestStamp | None]] = []
            try:
                for page in self.storage.s3.get_paginator("list_objects_v2").paginate(
                        Bucket=self.storage.bucket, Prefix=node_prefix, Delimiter=FOLD):
                    found.extend((o["Key"], _stamp(o)) for o in page.get("Contents", []))
                    found.extend((p["Prefix"], None) for p in page.get("CommonPrefixes", []))
                if all(stamp is not None or key.endswith(FOLD) for key, stamp in found):
                    return found
                reason = "it folded keys elsewhere"
            except (ClientError, BotoCoreError) as exc:
                reason = str(exc)
            self._fold_refused = True
            log.warning("the S3 store does not list with the delimiter %r (%s): backup list reads every "
                        "file key instead, slower as the history grows", FOLD, reason)
        return [(o["Key"], _stamp(o)) for o in self.storage.list_objects(node_prefix)]

    def _read_index(self, snapshot_ts: datetime) -> dict[str, IndexEntry]:
        data = self.storage.get_bytes(catalog_key(snapshot_ts), missing_ok=True)
        if data is None:
            return {}
        try:
            return parse_index(data, snapshot_ts)
        except LayoutError as exc:
            log.warning("%s; rebuilding it from the manifests", exc)
            return {}

    def _read_entry(self, listing: SnapshotListing, prefix: str) -> IndexEntry | None:
        """The entry of a manifest the index lacks; None if it was deleted since the listing."""
        ref = listing.sets[prefix]
        data = self.storage.get_bytes(ref.manifest_key, missing_ok=True)
        if data is None:
            return None
        info = summarise(ref, data)
        return IndexEntry(listing.manifests[prefix], info.summary, info.problem)

    def _write_index(self, change: tuple[datetime, dict[str, IndexEntry]]) -> None:
        """Written after the manifests it summarises were read. Two listings may rewrite one index at
        once and the last write may lack a set the other read: harmless, since every entry is checked
        against the listing and a manifest without one is read again. Read-only credentials list at
        the manifests' cost."""
        snapshot_ts, entries = change
        try:
            self.storage.put_bytes(catalog_key(snapshot_ts), format_index(snapshot_ts, entries),
                                   content_type="application/json")
        except StorageError as exc:
            log.warning("catalog index not updated (%s): listings keep reading its manifests", exc)

    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.put_bytes(manifest.set.manifest_key, manifest.to_json(), content_type="application/json")

    def delete_set(self, ref: SetRef) -> int:
        """Removes an incomplete set's objects (never call on a set with a manifest)."""
        keys = [o["Key"] for o in self.storage.list_objects(ref.prefix)]
        self.storage.delete_keys(keys)
        return len(keys)


def _stamp(listed: dict) -> ManifestStamp:
    return ManifestStamp(listed["ETag"].strip('"'), listed["Size"])


def _drop_last_modified(response_dict: dict, **_) -> None:
    if getattr(_catalog_listing, "active", False):
        response_dict["body"] = _LAST_MODIFIED.sub(b"", response_dict["body"])


@contextmanager
def _last_modified_unparsed(s3_client) -> Iterator[None]:
    """Listings made in this thread meanwhile come without LastModified."""
    s3_client.meta.events.register("before-parse.s3.ListObjectsV2", _drop_last_modified,
                                   unique_id="dmf-catalog-drop-last-modified")
    _catalog_listing.active = True
    try:
        yield
    finally:
        _catalog_listing.active = False
