"""backup-verify: are the complete sets in a time window still what their manifests say?
    read-catalog (the whole history: chains reach past the window) → read-manifests (the window's
    complete sets) → check-listings (one listing per set: missing objects, wrong sizes, strays)
    → deep-check (deep or sample: objects re-read, SHA-256 against the manifest)
    → check-locks (under object_lock: objects locked for less than the retention policy needs, a warning)
    → report (with the restore points each damaged set breaks), published as an artifact.
It only reads (and refreshes the catalog index, as backup-list does). The report comes back whatever
it finds; `dmf backup verify` exits 1 on damage."""
from __future__ import annotations

import random

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dmf.blocks import DEFAULT_BLOCK, S3Repository
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_window, utcnow
from dmf.core.verify import (build_report, check_sample, report_markdown, sample_objects,
                             select_sets, summary_line)
from dmf.tasks.verify import check_listings, check_locks, deep_check, read_catalog, read_manifests


@flow(name="backup-verify")
def backup_verify(start_time: str | int | None = None, end_time: str | int | None = None,
                  db_target: str | None = None, deep: bool = False, sample: float | None = None,
                  seed: int | None = None, repository_block: str = DEFAULT_BLOCK) -> dict:
    """Check every complete set whose time is in [start_time, end_time] (UTC) and that holds data of
    `db_target` (keyspace[.table]) when given: each object its manifest lists exists with its size,
    from one listing per set; objects it does not list are reported as strays (a warning). `deep`
    re-reads every object and checks its SHA-256; `sample` (0 < F <= 1) re-reads that fraction of
    the objects, drawn with `seed` (one is picked and reported when not given)."""
    start, end = parse_window(start_time, end_time)
    fraction = check_sample(sample)
    target = DbTarget.parse(db_target)
    if fraction is not None and seed is None:
        seed = random.SystemRandom().randrange(2**31)  # reported, so that the draw can be repeated
    options = {"time": format_ts(utcnow()), "start_time": format_ts(start) if start else None,
               "end_time": format_ts(end) if end else None, "db_target": str(target) or None,
               "deep": deep or fraction is not None, "sample": fraction, "seed": seed if fraction is not None else None}
    repository = S3Repository.load(repository_block)
    catalog = read_catalog(repository)
    selection = select_sets(catalog, start, end, target)
    manifests, gone = read_manifests(repository, selection.complete)
    found, whole = check_listings(repository, manifests)
    chosen = sample_objects(whole, fraction, seed) if options["deep"] else []
    mismatched = deep_check(repository, chosen) if chosen else []
    short = check_locks(repository, manifests) if repository.object_lock != "none" else []
    report = build_report(catalog, selection, manifests, [*gone, *found, *mismatched, *short], chosen, options)
    logger = get_run_logger()
    for problem in report["problems"]:
        (logger.error if problem["damage"] else logger.warning)("%s: %s", problem["object"], problem["detail"])
    for broken in report["breaks"]:
        logger.error("%s %s", broken["set"], broken["restore_points"])
    (logger.info if report["clean"] else logger.error)("%s", summary_line(report))
    create_markdown_artifact(key="backup-verify", markdown=report_markdown(report), description=summary_line(report))
    return report
