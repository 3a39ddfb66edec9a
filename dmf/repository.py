"""The backup repository: the bucket layout (dmf.core.keys) over S3 storage (dmf.storage).

Reads the history from keys and manifests only; its cost follows the number of sets, since
every level is a delimiter listing and only manifests are read, never file listings.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from dmf.core.catalog import Catalog, Group, SetInfo
from dmf.core.errors import InputError, LayoutError
from dmf.core.keys import SetKind, SetRef, parse_set_prefix
from dmf.core.manifest import Manifest
from dmf.core.timestamps import format_ts, parse_ts
from dmf.storage import Storage

ALL_KINDS = frozenset(SetKind)
DATA_KINDS = frozenset({SetKind.SNAPSHOT, SetKind.INCREMENTAL})


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

    def latest_full(self, node_hosts: Iterable[str]) -> Group | None:
        """The newest complete full snapshot that includes `node_hosts`."""
        for catalog in self.newest_first(kinds={SetKind.SNAPSHOT}):
            full = catalog.latest_full_any(node_hosts)
            if full is not None:
                return full
        return None

    def catalog(self, start: datetime | None = None, end: datetime | None = None,
                kinds: Collection[SetKind] = ALL_KINDS, node: str | None = None) -> Catalog:
        return self._catalog_of(self.set_prefixes(start, end, kinds, node))

    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.put_bytes(manifest.set.manifest_key, manifest.to_json(), content_type="application/json")

    def delete_set(self, ref: SetRef) -> int:
        """Removes an incomplete set's objects (never call on a set with a manifest)."""
        keys = [o["Key"] for o in self.storage.list_objects(ref.prefix)]
        self.storage.delete_keys(keys)
        return len(keys)
