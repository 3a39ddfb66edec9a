"""`backup verify`'s pure parts: which sets a window holds, a set's listing against its manifest, a
re-read object against its entry, the deep check's sample, the restore points damage breaks, and the
report. The listings and reads are dmf.verify's.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from dmf.core.catalog import KIND_NAMES, Catalog, Group, chain_summaries, listed
from dmf.core.errors import InputError, LayoutError, quote
from dmf.core.keys import SetKind, SetRef
from dmf.core.manifest import Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts

MISSING, SIZE, SHA256, STRAY, MANIFEST = "missing", "size", "sha256", "stray", "manifest"
UNSEALED = "unsealed"  # a partial backup's host without a manifest, and nothing shows the backup was ever complete
LOCK = "lock"  # under object_lock, an object locked for less than the retention policy needs (dmf.core.object_lock)
WARNINGS = (STRAY, UNSEALED, LOCK)


@dataclass(frozen=True)
class Finding:
    """One problem with one object of a set. A stray (an object the manifest does not list) is a
    warning: no restore reads it; so is an unsealed set (a run that failed on its host, or a manifest
    lost: the bucket cannot tell). Everything else is damage."""

    set: SetRef
    key: str
    problem: str  # MISSING, SIZE, SHA256, STRAY, MANIFEST or UNSEALED
    detail: str   # as the operator reads it: "missing", "size 10 expected 12", "sha256 mismatch", …

    @property
    def damage(self) -> bool:
        return self.problem not in WARNINGS


@dataclass(frozen=True)
class Expected:
    """An object a manifest lists, as the deep check re-reads it."""

    set: SetRef
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Selection:
    complete: list[SetRef]      # sets with a manifest: to verify
    unreadable: list[Finding]   # partial backups' sets whose manifest is malformed, or missing (see select_sets)
    incomplete: int             # other sets without a manifest: never used, so not verified (cleanup removes them)


@dataclass(frozen=True)
class Breakage:
    start: datetime | None  # None: no restore point uses the set
    end: datetime | None
    text: str


def check_sample(sample: float | None) -> float | None:
    # Written so that NaN is refused too.
    if sample is not None and not (isinstance(sample, (int, float)) and not isinstance(sample, bool)
                                   and 0 < sample <= 1):
        raise InputError(f"invalid --sample {quote(sample)}: a fraction of the objects, 0 < F <= 1")
    return sample


def _built_on(catalog: Catalog, snapshot_ts: datetime) -> list[Group]:
    """The complete increments and batches under a snapshot: a run builds on a complete full only, so
    they show it was complete when they were taken."""
    return [g for g in [*catalog.increments, *catalog.commitlogs] if g.complete and g.snapshot_ts == snapshot_ts]


def select_sets(catalog: Catalog, start: datetime | None, end: datetime | None, target: DbTarget) -> Selection:
    """The sets of the groups `backup list` shows for the same window and target. Of a partial backup
    (Group.partial), every host without a manifest is named: damage where its full has complete sets
    built on it (a manifest lost since), else a warning (a failed run, or a lost manifest)."""
    complete, unreadable, incomplete = [], [], 0
    for group in listed(catalog, start, end, None, target):
        for info in group.sets.values():
            if info.complete:
                complete.append(info.ref)
            elif info.problem:
                reason = info.problem.removeprefix(f"{info.ref.manifest_key}: ")
                unreadable.append(Finding(info.ref, info.ref.manifest_key, MANIFEST, f"unreadable manifest: {reason}"))
            elif not group.partial:
                incomplete += 1
        if not group.partial:
            continue
        lost = group.kind is SetKind.SNAPSHOT and bool(_built_on(catalog, group.snapshot_ts))
        sealed = ", ".join(h for h in group.hosts if h not in group.unsealed)
        for host in group.unsealed:
            info = group.sets.get(host)
            if info is not None and info.problem:
                continue
            ref = info.ref if info is not None else _host_ref(group, host)
            if ref is None:
                continue
            what = "no manifest" if info is not None else "no manifest, and no object of its set"
            if lost:
                unreadable.append(Finding(ref, ref.manifest_key, MANIFEST, f"{what}, though {sealed} sealed this "
                                          "full and complete sets are built on it: a manifest lost since"))
            else:
                unreadable.append(Finding(ref, ref.manifest_key, UNSEALED, f"{what}, though {sealed} sealed this "
                                          "backup: a run that failed on this host, or a manifest lost since"))
    return Selection(sorted(complete), unreadable, incomplete)


def check_listing(manifest: Manifest, listing: Iterable[tuple[str, int]]) -> tuple[list[Finding], list[Expected]]:
    """The listing (key, size) of a set's prefix against its manifest: the findings, and the objects
    found whole by size (what the deep check may re-read)."""
    ref = manifest.set
    sizes = dict(listing)
    sizes.pop(ref.manifest_key, None)
    findings, intact = [], []
    for entry in manifest.files:
        key = ref.file_key(entry.path)
        size = sizes.pop(key, None)
        if size is None:
            findings.append(Finding(ref, key, MISSING, "missing"))
        elif size != entry.size:
            findings.append(Finding(ref, key, SIZE, f"size {size} expected {entry.size}"))
        else:
            intact.append(Expected(ref, key, entry.size, entry.sha256))
    findings.extend(Finding(ref, key, STRAY, "stray: not in the manifest") for key in sorted(sizes))
    return findings, intact


def check_read(expected: Expected, size: int, sha256: str) -> Finding | None:
    """An object's bytes as re-read (count and SHA-256) against its manifest entry."""
    if size != expected.size:  # rewritten since it was listed
        return Finding(expected.set, expected.key, SIZE, f"size {size} expected {expected.size}")
    if sha256 != expected.sha256:
        return Finding(expected.set, expected.key, SHA256, "sha256 mismatch")
    return None


def sample_objects(objects: Sequence[Expected], fraction: float | None, seed: int | None) -> list[Expected]:
    """Every object, or ceil(fraction × n) of them drawn with `seed`: the same listing and seed give
    the same draw, whatever order the listings came back in."""
    ordered = sorted(objects, key=lambda o: o.key)
    if fraction is None:
        return ordered
    drawn = random.Random(seed).sample(ordered, math.ceil(fraction * len(ordered)))
    return sorted(drawn, key=lambda o: o.key)


def _host_ref(group: Group, host: str) -> SetRef | None:
    """The set a run's host would have written; None for a name a manifest gives that is not a host."""
    try:
        return SetRef(group.snapshot_ts, host, group.kind, None if group.kind is SetKind.SNAPSHOT else group.time)
    except LayoutError:
        return None


def _groups_by_ref(catalog: Catalog) -> dict[SetRef, Group]:
    """Every set's group, the sets of a run's hosts that left no object included."""
    groups = {info.ref: group for group in catalog.all_groups() for info in group.sets.values()}
    for group in [*catalog.fulls, *catalog.increments]:
        for ref in filter(None, (_host_ref(group, host) for host in group.unsealed)):
            groups.setdefault(ref, group)
    return groups


def broken_restore_points(catalog: Catalog, damaged: Iterable[SetRef]) -> dict[SetRef, Breakage]:
    """Which restore points each damaged set (a set of `catalog`) breaks, by the way a restore
    resolves its chain (dmf.core.catalog.resolve_chain); a chain ends where `backup list`'s
    restorable window does (chain_summaries).

    - A full snapshot set: every host's set is needed, so the whole chain, from the full to the end.
    - An increment: restore points from it to the chain's end; earlier ones do not read it.
    - A commit-log batch: point-in-time replay from when its earliest segment can start (the host
      ID's previous batch in the chain, or the full) to the chain's end or the batch, whichever is
      later; a restore resolves every batch up to the first one after its time, so every later
      point reads it. Restores without replay do not.
    - A set of a full that is not complete, though complete sets are built on it (a manifest damaged
      or lost since): its whole chain, from the full to the newest of them.
    - A set of another incomplete backup, or of a chain whose full is incomplete: none.
    """
    groups = _groups_by_ref(catalog)
    chains = chain_summaries(catalog)
    fulls = {g.snapshot_ts: g for g in catalog.fulls}
    broken = {}
    for ref in damaged:
        group = groups[ref]
        chain = chains.get(group.snapshot_ts)
        built = _built_on(catalog, group.snapshot_ts) if group.kind is SetKind.SNAPSHOT else []
        if not group.complete and built:
            start, end = group.time, max(g.time for g in built)
            broken[ref] = Breakage(start, end, f"breaks restore points from {format_ts(start)} to {format_ts(end)} "
                                               f"(UTC): the whole chain of this full snapshot of {_target_name(group)}, "
                                               "which no restore uses while it is not complete (they take an "
                                               "earlier full, if any)")
            continue
        if not group.complete:
            broken[ref] = Breakage(None, None, "breaks no restore point: its backup is not complete, so no "
                                               "restore uses it")
            continue
        if chain is None:
            broken[ref] = Breakage(None, None, f"breaks no restore point: its full snapshot "
                                               f"{format_ts(group.snapshot_ts)} is not complete, so no restore uses it")
            continue
        full = fulls[group.snapshot_ts]
        end = max(chain.restorable_until, group.time)
        if group.kind is SetKind.SNAPSHOT:
            start = group.time
            text = (f"breaks restore points from {format_ts(start)} to {format_ts(end)} (UTC): the whole chain "
                    f"of this full snapshot of {_target_name(full)}")
        elif group.kind is SetKind.INCREMENTAL:
            start = group.time
            text = (f"breaks restore points from {format_ts(start)} to {format_ts(end)} (UTC) of "
                    f"{_target_name(full)}; earlier points of its chain (from {format_ts(full.time)}) still restore")
        else:
            earlier = [g.time for g in catalog.commitlogs
                       if g.complete and ref.node in g.sets and full.time <= g.time < group.time]
            start = max(earlier, default=full.time)
            text = (f"breaks point-in-time replay (--replay-commitlogs) from {format_ts(start)} to "
                    f"{format_ts(end)} (UTC); restores without replay are unaffected")
        broken[ref] = Breakage(start, end, text)
    return broken


def _target_name(group: Group) -> str:
    return group.db_target or "every keyspace"


def build_report(catalog: Catalog, selection: Selection, manifests: Sequence[Manifest], findings: Iterable[Finding],
                 hashed: Sequence[Expected], options: dict) -> dict:
    """The JSON-friendly report: the run's `options`, what was verified, every finding (the
    selection's unreadable manifests too; damage first, then strays, each by key), and the restore
    points each damaged set breaks."""
    ordered = sorted([*selection.unreadable, *findings], key=lambda f: (not f.damage, f.key, f.problem))
    damaged = sorted({f.set for f in ordered if f.damage})
    broken = broken_restore_points(catalog, damaged)
    return {
        **options,
        "sets": len(selection.complete) + len(selection.unreadable),
        "objects": sum(len(m.files) for m in manifests),
        "bytes": sum(m.total_bytes for m in manifests),
        "hashed_objects": len(hashed),
        "hashed_bytes": sum(o.size for o in hashed),
        "incomplete_sets": selection.incomplete,
        "problems": [{"set": f.set.prefix, "kind": KIND_NAMES[f.set.kind], "object": f.key, "problem": f.problem,
                      "detail": f.detail, "damage": f.damage} for f in ordered],
        "breaks": [{"set": ref.prefix, "kind": KIND_NAMES[ref.kind],
                    "from": format_ts(b.start) if b.start else None, "to": format_ts(b.end) if b.end else None,
                    "restore_points": b.text} for ref, b in broken.items()],
        "damaged_sets": len(damaged),
        "clean": not damaged,
    }


_NAMES = {MISSING: "missing", SIZE: "wrong size", SHA256: "sha256 mismatch", MANIFEST: "manifest unreadable or missing"}


def summary_line(report: dict) -> str:
    """One line: what was verified and what was found."""
    counts = Counter(p["problem"] for p in report["problems"])
    damage = sum(n for problem, n in counts.items() if problem not in WARNINGS)
    verified = (f"{report['sets']} set(s), {report['objects']} object(s) verified"
                + (f", {report['hashed_objects']} re-read" if report["deep"] else ""))
    strays = (f"; {counts[STRAY]} stray object(s) (warning)" if counts[STRAY] else "") + \
        (f"; {counts[UNSEALED]} set(s) of partial backups without a manifest (warning)" if counts[UNSEALED] else "") + \
        (f"; {counts[LOCK]} object(s) locked for less than the retention policy needs (warning)" if counts[LOCK] else "")
    if not damage:
        return f"{verified}: no damage{strays}"
    kinds = ", ".join(f"{counts[problem]} {name}" for problem, name in _NAMES.items() if counts[problem])
    return f"{damage} damaged object(s) in {report['damaged_sets']} set(s) ({kinds}); {verified}{strays}"


def _md(text: str) -> str:
    """A markdown table cell: stray keys are any S3 key, so nothing in one may become markup."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return "".join("\\" + c if c in "\\`*_[]<>|#" else c for c in text)


def report_markdown(report: dict) -> str:
    lines = [f"**{_md(summary_line(report))}**", ""]
    if report["problems"]:
        lines += ["| set | object | problem |", "|---|---|---|"]
        lines += [f"| {_md(p['set'])} | {_md(p['object'].removeprefix(p['set']))} | {_md(p['detail'])} |"
                  for p in report["problems"]]
        lines.append("")
    lines += [f"- {_md(b['set'])}: {_md(b['restore_points'])}" for b in report["breaks"]]
    return "\n".join(lines)
