"""The backup repository: the bucket layout (dmf.core.keys) over S3 storage (dmf.storage).

Reads the history from keys and manifests only, never from file listings. A run reads the
snapshots newest first and stops at the one it needs; `backup list` reads the whole history
through the catalog index (dmf.core.index): a closed snapshot costs one listing of its top level and
its closed chain summary; an open one a listing that follows sets, not files, its index object, and
the manifests the index lacks.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import re
import threading
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from dmf.core.catalog import Catalog, Group, SetInfo
from dmf.core.client_encryption import opened_schema, signed_schema
from dmf.core.errors import LayoutError, PermanentError
from dmf.core.index import (
    IndexEntry, ManifestStamp, SnapshotListing, closable, format_index, parse_closed, parse_index, reconcile,
    set_infos, summarise,
)
from dmf.core.keys import (CATALOG_NAME, CLOSED_NAME, SetKind, SetRef, catalog_key, closed_key, kind_of_prefix,
                           node_prefix, parse_set_prefix, parse_snapshot_prefix, registry_block_key,
                           registry_manifest_key, registry_node_key, schema_key, sets_from, snapshot_prefix)
from dmf.core.manifest import Manifest
from dmf.core.timestamps import format_ts
from dmf.encryption import mac_key
from dmf.storage import Storage, StorageError, StoredObject

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


@dataclass(frozen=True)
class SnapshotTop:
    """A snapshot's top level, as one '/' listing shows it."""

    nodes: frozenset[str]   # `<snapshot_ts>/<node>/` prefixes
    names: frozenset[str]   # its own objects: schema.cql, catalog.json, closed.json


class Repository:
    def __init__(self, storage: Storage, parallel: int = 16):
        self.storage = storage
        self.parallel = parallel
        self._fold_refused = False
        self._fold_lock = threading.Lock()

    def snapshot_times(self) -> list[datetime]:
        """The time of every `<snapshot_ts>/` prefix, whatever it holds."""
        return sorted(ts for prefix in self.storage.list_prefixes("")
                      if (ts := parse_snapshot_prefix(prefix)) is not None)

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
        for top in snapshot_prefixes:
            snapshot_time = parse_snapshot_prefix(top)
            if snapshot_time is None or (end is not None and snapshot_time > end):
                continue  # not a snapshot, or every set under it is later still
            node_prefixes = ([node_prefix(snapshot_time, node)] if node is not None
                             else self.storage.list_prefixes(top))
            refs.extend(self._sets_under_nodes(node_prefixes, start, end, kinds))
        return refs

    def _sets_under_nodes(self, node_prefixes: Iterable[str], start: datetime | None, end: datetime | None,
                          kinds: Collection[SetKind]) -> list[SetRef]:
        refs: list[SetRef] = []
        for under_node in node_prefixes:
            for kind_prefix in self.storage.list_prefixes(under_node):
                kind = kind_of_prefix(kind_prefix)
                if kind is None or kind not in kinds:
                    continue
                if kind is SetKind.SNAPSHOT:
                    candidates = [kind_prefix]
                else:
                    candidates = self.storage.list_prefixes(kind_prefix, start_after=sets_from(kind_prefix, start))
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
        return self._catalog_of(self._sets_under([snapshot_prefix(snapshot_ts)], None, None, kinds, None))

    def active_catalog(self, since: datetime, kinds: Collection[SetKind] = DATA_KINDS) -> Catalog:
        """Every set of `kinds` of the snapshots that hold one written at or after `since`: the chains
        still growing then, whole. Older snapshots cost a few listings each and no manifest read."""
        active = sorted({ref.snapshot_ts for ref in self.set_prefixes(start=since, kinds=kinds)})
        return self._catalog_of(self._sets_under([snapshot_prefix(ts) for ts in active], None, None, kinds, None))

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
        for top in sorted(self.storage.list_prefixes(""), reverse=True):
            refs = self._sets_under([top], None, end, kinds, None)
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

    def listing_catalog(self, up_to: datetime | None = None, use_index: bool = True, rescan: bool = False,
                        now: datetime | None = None) -> Catalog:
        """Every set of every snapshot taken up to `up_to`, as `backup list` shows them: summaries, not
        whole manifests (Group.manifests refuses), and a malformed manifest leaves its set incomplete
        with a SetInfo.problem instead of failing the listing.

        With the index: per snapshot one '/' listing of its top level; a closed snapshot then costs its
        closed.json only; an open one a listing of its sets, its catalog.json and the manifests that
        lacks; then each index is rewritten where it changed, and snapshots that became closed
        (closable, as of `now`) get closed.json. `rescan` trusts no stored index and rewrites them all.
        Without the index: the delimiter walk and every manifest, one GET per set (the reference the
        index is tested against).
        """
        snapshots = sorted(ts for prefix in self.storage.list_prefixes("")
                           if (ts := parse_snapshot_prefix(prefix)) is not None and (up_to is None or ts <= up_to))
        with ThreadPoolExecutor(self.parallel) as pool:
            if not use_index:
                refs = self._sets_under([snapshot_prefix(ts) for ts in snapshots], None, None, ALL_KINDS, None)
                return Catalog.build(pool.map(self._summarise, refs))
            tops = list(pool.map(self._list_top, snapshots))
            summaries = [None] * len(snapshots) if rescan else list(pool.map(self._closed_summary, snapshots, tops))

            def list_open(ts: datetime, top: SnapshotTop) -> tuple[SnapshotListing, dict[str, IndexEntry]]:
                stored = {} if rescan or CATALOG_NAME not in top.names else self._read_index(ts)
                return self._list_snapshot(ts, top), stored
            # Snapshots without a summary are open: listed while the summaries are parsed here (CPU
            # work, which threads would only take turns at).
            early = {ts: pool.submit(list_open, ts, top) for ts, top, data in zip(snapshots, tops, summaries)
                     if data is None}
            with _collector_paused():
                closed = [None if data is None else self._closed_sets(ts, top, data)
                          for ts, top, data in zip(snapshots, tops, summaries)]
            open_ = [(ts, top) for ts, top, infos in zip(snapshots, tops, closed) if infos is None]
            found = [(early.get(ts) or pool.submit(list_open, ts, top)).result() for ts, top in open_]
            listings, stored = [listing for listing, _ in found], [entries for _, entries in found]
            fresh: list[dict[str, IndexEntry]] = []
            unread: list[tuple[int, str]] = []  # (open snapshot's position, set prefix)
            for position, (entries, listing) in enumerate(zip(stored, listings)):
                valid, prefixes = reconcile(entries, listing)
                fresh.append(valid)
                unread.extend((position, prefix) for prefix in prefixes)
            read = pool.map(self._read_entry, [listings[i] for i, _ in unread], [prefix for _, prefix in unread])
            for (position, prefix), entry in zip(unread, read):
                if entry is not None:
                    fresh[position][prefix] = entry
            changed = [(ts, entries, None) for (ts, _), entries, old, listing in zip(open_, fresh, stored, listings)
                       if listing.sets and entries != old]
            with _collector_paused():
                infos = [info for sets in closed if sets is not None for info in sets]
                infos += [info for listing, entries in zip(listings, fresh) for info in set_infos(listing, entries)]
                catalog = Catalog.build(infos)
            now_closable = closable(catalog, now or datetime.now(timezone.utc))
            changed += [(ts, entries, top.nodes) for (ts, top), entries in zip(open_, fresh) if ts in now_closable]
            list(pool.map(self._write_index, changed))
            self._drop_closed([ts for ts, top in open_ if CLOSED_NAME in top.names and ts not in now_closable])
        return catalog

    def _summarise(self, ref: SetRef) -> SetInfo:
        data = self.storage.get_bytes(ref.manifest_key, missing_ok=True)
        return SetInfo(ref) if data is None else summarise(ref, data)

    def _list_top(self, snapshot_ts: datetime) -> SnapshotTop:
        """One '/' listing of a snapshot's top level: its node prefixes and its own objects' names."""
        prefix = snapshot_prefix(snapshot_ts)
        with _last_modified_unparsed(self.storage.s3):
            nodes, keys = self.storage.list_level(prefix)
        return SnapshotTop(frozenset(nodes), frozenset(key.removeprefix(prefix) for key in keys))

    def _closed_summary(self, snapshot_ts: datetime, top: SnapshotTop) -> bytes | None:
        return self.storage.get_bytes(closed_key(snapshot_ts), missing_ok=True) if CLOSED_NAME in top.names else None

    def _closed_sets(self, snapshot_ts: datetime, top: SnapshotTop, data: bytes) -> list[SetInfo] | None:
        """A closed snapshot's sets from its closed.json, trusted while it names the node prefixes
        listed; None (list the snapshot) when it is malformed or stale."""
        try:
            nodes, infos = parse_closed(data, snapshot_ts)
        except LayoutError as exc:
            log.warning("%s; listing the snapshot instead and writing it again", exc)
            return None
        if nodes != top.nodes:
            log.warning("the closed chain summary of snapshot %s names other nodes than the bucket holds; "
                        "listing the snapshot instead and writing it again", format_ts(snapshot_ts))
            return None
        return infos

    def _list_snapshot(self, snapshot_ts: datetime, top: SnapshotTop) -> SnapshotListing:
        if self._fold_refused:
            return self._walk_snapshot(top)
        listing = SnapshotListing()
        with _last_modified_unparsed(self.storage.s3):
            for under_node in sorted(top.nodes):
                folded = self._folded_keys(under_node)
                if folded is None:
                    return self._walk_snapshot(top)
                for key, stamp in folded:
                    listing.add(key, stamp)
        return listing

    def _walk_snapshot(self, top: SnapshotTop) -> SnapshotListing:
        """The snapshot's set prefixes from '/' listings (node, kind, set): a cost that follows sets,
        on any store, without the manifests' stamps."""
        listing = SnapshotListing(stamped=False)
        for ref in self._sets_under_nodes(sorted(top.nodes), None, None, ALL_KINDS):
            listing.add(ref.prefix)
        return listing

    def _folded_keys(self, node_prefix: str) -> list[tuple[str, ManifestStamp | None]] | None:
        """The keys under a node's prefix with their stamps, each table's files folded into one common
        prefix (stamp None); None when the store refuses the FOLD delimiter, or folds elsewhere (at
        '/'): the listing then walks '/' prefixes instead, which this repository keeps doing."""
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
            with self._fold_lock:  # snapshots are listed in parallel: say it once
                if not self._fold_refused:
                    self._fold_refused = True
                    log.info("the S3 store does not list with the delimiter %r (%s): backup list walks set "
                             "prefixes with '/' instead", FOLD, reason)
        return None

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
        # A walk lists no stamps: the stamp of a single-part PUT (what write_manifest does) stands in.
        stamp = listing.manifests.get(prefix) or ManifestStamp(hashlib.md5(data, usedforsecurity=False).hexdigest(),
                                                               len(data))
        return IndexEntry(stamp, info.summary, info.problem)

    def _write_index(self, change: tuple[datetime, dict[str, IndexEntry], frozenset[str] | None]) -> None:
        """catalog.json, or closed.json when the snapshot's nodes are given; written after the manifests
        they summarise were read. Two listings may rewrite one catalog.json at once and the last write
        may lack a set the other read: harmless, since a listed set without an entry is read again.
        Read-only credentials list at the manifests' cost."""
        snapshot_ts, entries, nodes = change
        key = catalog_key(snapshot_ts) if nodes is None else closed_key(snapshot_ts)
        try:
            self.storage.put_bytes(key, format_index(snapshot_ts, entries, nodes), content_type="application/json",
                                   lockable=False)
        except StorageError as exc:
            log.warning("catalog index not updated (%s): listings keep reading its manifests", exc)

    def _drop_closed(self, snapshots: list[datetime]) -> None:
        """Closed summaries found stale (a rescan, another node) of snapshots that are not closable now."""
        try:
            self.storage.delete_keys([closed_key(ts) for ts in snapshots])
        except StorageError as exc:
            log.warning("stale closed chain summaries not removed (%s): listings keep checking them", exc)

    def write_schema(self, snapshot_ts: datetime, schema: str) -> None:
        """The snapshot's schema.cql; under client-side encryption signed with its MAC."""
        key, client_key = schema_key(snapshot_ts), self.storage.repository.client_key()
        text = schema if client_key is None else signed_schema(schema, key, mac_key(client_key))
        self.storage.put_bytes(key, text.encode(), "text/plain")

    def read_schema(self, snapshot_ts: datetime) -> str | None:
        """The snapshot's schema.cql, None if there is none; under client-side encryption only one whose
        MAC authenticates, refused in one line otherwise."""
        key, client_key = schema_key(snapshot_ts), self.storage.repository.client_key()
        data = self.storage.get_bytes(key, missing_ok=True)
        if data is None:
            return None
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise PermanentError(f"{key}: not UTF-8 text (damaged, or not written by dmf)") from None
        return text if client_key is None else opened_schema(text, key, mac_key(client_key))

    def write_manifest(self, manifest: Manifest) -> None:
        """Seals a set. A listing that closed its snapshot meanwhile (a run that resolved its chain
        long ago) would not show it: the closed summary goes, and the next listing lists the snapshot."""
        self.seal(manifest.set, manifest.to_json())

    def seal(self, ref: SetRef, manifest: bytes) -> None:
        """Writes a set's manifest as given (a copy writes the primary's, byte for byte): see write_manifest."""
        self.storage.put_bytes(ref.manifest_key, manifest, content_type="application/json")
        try:
            self.storage.delete_keys([closed_key(ref.snapshot_ts)])
        except StorageError as exc:
            log.warning("%s is sealed, but the closed chain summary of its snapshot could not be removed (%s): "
                        "`dmf backup list --rescan` shows it", ref.prefix, exc)

    def stored_sizes(self, ref: SetRef) -> dict[str, int]:
        """relpath → size of every data object under the set, as listed now (one listing)."""
        return {o["Key"][len(ref.prefix):]: o["Size"] for o in self.storage.list_objects(ref.prefix)
                if o["Key"] != ref.manifest_key}

    def delete_set(self, ref: SetRef) -> int:
        """Removes an incomplete set's objects (never call on a set with a manifest)."""
        keys = [o["Key"] for o in self.storage.list_objects(ref.prefix)]
        self.storage.delete_keys(keys)
        return len(keys)

    # The registry (registry/<ts>/): the manager's blocks and the nodes' configuration, sealed by its manifest.
    def write_registry_block(self, ts: datetime, block_type: str, name: str, document: bytes) -> StoredObject:
        return self.storage.put_bytes(registry_block_key(ts, block_type, name), document, "application/json")

    def write_registry_node_file(self, ts: datetime, host: str, file_name: str, data: bytes) -> StoredObject:
        return self.storage.put_bytes(registry_node_key(ts, host, file_name), data)

    def seal_registry(self, ts: datetime, manifest: bytes) -> StoredObject:
        """Written last: the registry backup of `ts` is complete."""
        return self.storage.put_bytes(registry_manifest_key(ts), manifest, "application/json")


def _stamp(listed: dict) -> ManifestStamp:
    return ManifestStamp(listed["ETag"].strip('"'), listed["Size"])


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Reading a year of closed summaries makes ~10 objects per set, none in a reference cycle: the
    cyclic collector would scan the growing heap again and again for nothing (measured: it doubled
    the parse of 35,000 sets). Paused for that loop only."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
