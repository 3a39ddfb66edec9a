"""Backup health at a glance (pure): from the catalog and the last runs of each flow, what is protected,
how old it is against its schedule, and what is late or failed.

A flag is raised when a thing is older than LATE_FACTOR times its expected interval (a scheduled run
may start late or take a while), or when the newest run of a flow failed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dmf.core.catalog import Catalog, chain_summaries
from dmf.core.lifecycle import FullEvery, lineage
from dmf.core.shipper import Heartbeat, lag, lag_flags
from dmf.core.timestamps import format_ts

LATE_FACTOR = 2.0
GROWTH_WINDOW = timedelta(days=7)
FAILED_STATES = frozenset({"FAILED", "CRASHED", "TIMEDOUT"})


@dataclass(frozen=True)
class Schedule:
    """How often each thing is expected (the deployments' schedules and the repository's full_every)."""

    increment: timedelta = timedelta(hours=1)
    full: timedelta | None = timedelta(days=7)
    # flow name → interval of its schedule. Shipping is judged by its runs, not by the age of the last
    # batch: an idle cluster closes no segment, so ships nothing, and is not late.
    flows: dict[str, timedelta] = field(default_factory=dict)

    @classmethod
    def of(cls, full_every: FullEvery, increment: timedelta, flows: dict[str, timedelta]) -> Schedule:
        return cls(increment, full_every.age, flows)


@dataclass(frozen=True)
class LastRun:
    """A flow's newest run, and its newest completed one."""

    flow: str
    state: str                      # state type of the newest run: COMPLETED, FAILED, RUNNING, ...
    at: datetime | None             # when the newest run started (or was expected to)
    completed_at: datetime | None   # end of the newest completed run
    name: str = ""
    message: str = ""               # its state's message: a failed run's names what failed (a host, a file)


@dataclass(frozen=True)
class LastCheck:
    """The newest report of a verify or a drill (their artifacts)."""

    key: str                 # backup-verify, restore-drill
    at: datetime | None      # None: never ran
    summary: str = ""

    @property
    def failed(self) -> bool:
        return "damaged" in self.summary or "FAILED" in self.summary


CHECK_EVERY = timedelta(days=7)  # the verify and drill deployments run weekly


def _age(now: datetime, then: datetime | None) -> timedelta | None:
    return None if then is None else now - then


def _late(age: timedelta | None, interval: timedelta | None) -> bool:
    return age is not None and interval is not None and age > interval * LATE_FACTOR


def brief(message: str, limit: int = 300) -> str:
    """A failed run's state message on one line (Prefect prefixes the exception's text)."""
    line = " ".join(message.split()).removeprefix("Flow run encountered an exception: ")
    return line if len(line) <= limit else line[:limit - 1] + "…"


def human(span: timedelta | None) -> str:
    if span is None:
        return "—"
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def status(catalog: Catalog, runs: list[LastRun], checks: list[LastCheck], now: datetime,
           schedule: Schedule, heartbeats: Sequence[Heartbeat] = ()) -> dict:
    """Per backed-up target and host set: its newest full and increment, each host's newest commit-log
    batch, the restorable window and recovery point lag; per node the long-lived shipper ships, its
    recovery-point lag from the shipper's heartbeat; per flow: its last run; the repository's size
    and growth. `problems` lists every flag, one line each."""
    chains = chain_summaries(catalog)
    problems: list[str] = []
    targets = []
    newest: dict = {}
    for full in catalog.fulls:
        if full.complete:
            newest[lineage(full)] = full
    for (db_target, hosts), full in sorted(newest.items(), key=lambda item: (item[0][0], sorted(item[0][1]))):
        name = db_target or "(all keyspaces)"
        increments = catalog.increments_of(full)
        last_set = increments[-1].time if increments else full.time
        chain = chains[full.snapshot_ts]
        shipped = {}
        for group in catalog.commitlogs:
            if group.complete and group.time >= full.time:
                for summary in group.summaries:
                    if summary.host in hosts:
                        shipped[summary.host] = group.time
        flags = []
        if _late(now - full.time, schedule.full):
            flags.append(f"full {human(now - full.time)} old (a new one every {human(schedule.full)})")
        if _late(now - last_set, schedule.increment):
            flags.append(f"last backup {human(now - last_set)} ago (expected every {human(schedule.increment)})")
        problems.extend(f"{name} on {','.join(sorted(hosts))}: {flag}" for flag in flags)
        targets.append({
            "db_target": db_target, "hosts": sorted(hosts), "full": format_ts(full.time),
            "full_age": human(now - full.time), "last_backup": format_ts(last_set),
            "last_backup_age": human(now - last_set), "increments": len(increments),
            "commitlogs": {h: format_ts(t) for h, t in sorted(shipped.items())},
            "restorable_from": format_ts(chain.restorable_from), "restorable_until": format_ts(chain.restorable_until),
            "recovery_point_lag": human(now - chain.restorable_until), "chain_bytes": chain.bytes,
            "flags": flags})
    shippers = []
    for beat in sorted(heartbeats, key=lambda b: b.host):
        flags = lag_flags(now, beat)
        problems.extend(f"commit-log shipper on {beat.host}: {flag}" for flag in flags)
        shippers.append({"host": beat.host, "host_id": beat.host_id, "heartbeat": format_ts(beat.beat_at),
                         "recovery_point": format_ts(beat.recovery_point) if beat.recovery_point else None,
                         "lag": human(lag(now, beat)), "unsealed": beat.unsealed, "flags": flags})
    flows = []
    for run in sorted(runs, key=lambda r: r.flow):
        interval = schedule.flows.get(run.flow)
        flags = []
        if run.state in FAILED_STATES:
            flags.append(f"last run {run.name} {run.state.lower()}" + (f": {brief(run.message)}" if run.message else ""))
        if interval is not None and (run.completed_at is None or _late(now - run.completed_at, interval)):
            flags.append(f"no completed run for {human(_age(now, run.completed_at))} (scheduled every "
                         f"{human(interval)})" if run.completed_at else "never completed")
        problems.extend(f"{run.flow}: {flag}" for flag in flags)
        flows.append({"flow": run.flow, "state": run.state, "at": format_ts(run.at) if run.at else None,
                      "completed_at": format_ts(run.completed_at) if run.completed_at else None,
                      "age": human(_age(now, run.completed_at)), "flags": flags})
    verified = []
    for check in checks:
        flags = (["never ran"] if check.at is None else [check.summary] if check.failed else []) + \
                ([f"last one {human(now - check.at)} ago (weekly)"] if _late(_age(now, check.at), CHECK_EVERY) else [])
        problems.extend(f"{check.key}: {flag}" for flag in flags)
        verified.append({"check": check.key, "at": format_ts(check.at) if check.at else None,
                         "summary": check.summary, "flags": flags})
    groups = catalog.all_groups()
    total = sum(g.bytes for g in groups)
    growth = sum(g.bytes for g in groups if g.time >= now - GROWTH_WINDOW)
    return {"time": format_ts(now), "targets": targets, "shippers": shippers, "flows": flows, "checks": verified, "repository_bytes": total,
            "growth_bytes_7d": growth, "problems": problems, "healthy": not problems}


def status_markdown(report: dict) -> str:
    lines = [f"# dmf backup status at {report['time']} UTC: "
             + ("healthy" if report["healthy"] else f"{len(report['problems'])} problem(s)"), ""]
    lines += [f"- **{p}**" for p in report["problems"]]
    lines += ["", "| target | hosts | full | last backup | restorable until | recovery point lag | flags |",
              "|---|---|---|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['db_target'] or '(all)'} | {','.join(t['hosts'])} | {t['full']} ({t['full_age']}) | "
                     f"{t['last_backup']} ({t['last_backup_age']}) | {t['restorable_until']} | "
                     f"{t['recovery_point_lag']} | {'; '.join(t['flags']) or 'ok'} |")
    if report.get("shippers"):
        lines += ["", "| node (shipper) | recovery point | lag | heartbeat | flags |", "|---|---|---|---|---|"]
        lines += [f"| {n['host']} | {n['recovery_point'] or 'none yet'} | {n['lag']} | {n['heartbeat']} | "
                  f"{'; '.join(n['flags']) or 'ok'} |" for n in report["shippers"]]
    lines += ["", "| flow | last run | last completed | flags |", "|---|---|---|---|"]
    for f in report["flows"]:
        lines.append(f"| {f['flow']} | {f['state']} {f['at'] or ''} | {f['completed_at'] or 'never'} | "
                     f"{'; '.join(f['flags']) or 'ok'} |")
    lines += ["", "| check | last | result |", "|---|---|---|"]
    for c in report["checks"]:
        lines.append(f"| {c['check']} | {c['at'] or 'never'} | {'; '.join(c['flags']) or c['summary']} |")
    lines += ["", f"Repository: {report['repository_bytes'] / 2**30:.2f} GiB, "
                  f"+{report['growth_bytes_7d'] / 2**30:.2f} GiB in 7 days."]
    return "\n".join(lines)
