"""The backup repository: the bucket layout (dmf.core.keys) over S3 storage (dmf.storage).

Reads the history from keys and manifests only; its cost follows the number of sets, since
every level is a delimiter listing and only manifests are read, never file listings.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from dmf.core.catalog import Catalog, SetInfo
from dmf.core.errors import LayoutError
from dmf.core.keys import SetKind, SetRef, parse_set_prefix
from dmf.core.manifest import Manifest
from dmf.core.timestamps import TS_FORMAT, parse_ts
from dmf.storage import Storage


def _is_ts_prefix(prefix: str) -> bool:
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    return len(name) == len(datetime(2000, 1, 1).strftime(TS_FORMAT)) and name.isdigit()


class Repository:
    def __init__(self, storage: Storage, parallel: int = 16):
        self.storage = storage
        self.parallel = parallel

    def set_prefixes(self, start: datetime | None = None, end: datetime | None = None) -> list[SetRef]:
        """Every set whose time is in [start, end], from delimiter listings only."""
        refs: list[SetRef] = []
        snapshots = [p for p in self.storage.list_prefixes("") if _is_ts_prefix(p)]
        for snapshot_prefix in snapshots:
            if end is not None and parse_ts(snapshot_prefix.rstrip("/")) > end:
                continue  # every set under it is later still
            for node_prefix in self.storage.list_prefixes(snapshot_prefix):
                for kind_prefix in self.storage.list_prefixes(node_prefix):
                    kind = kind_prefix.rstrip("/").rsplit("/", 1)[-1]
                    if kind == SetKind.SNAPSHOT.value:
                        candidates = [kind_prefix]
                    elif kind in (SetKind.INCREMENTAL.value, SetKind.COMMITLOG.value):
                        candidates = self.storage.list_prefixes(kind_prefix)
                    else:
                        continue
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

    def catalog(self, start: datetime | None = None, end: datetime | None = None) -> Catalog:
        refs = self.set_prefixes(start, end)
        with ThreadPoolExecutor(self.parallel) as pool:
            manifests = list(pool.map(self.read_manifest, refs))
        return Catalog.build(SetInfo(ref, m) for ref, m in zip(refs, manifests))

    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.put_bytes(manifest.set.manifest_key, manifest.to_json(), content_type="application/json")

    def delete_set(self, ref: SetRef) -> int:
        """Removes an incomplete set's objects (never call on a set with a manifest)."""
        keys = [o["Key"] for o in self.storage.list_objects(ref.prefix)]
        self.storage.delete_keys(keys)
        return len(keys)
