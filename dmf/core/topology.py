"""Restoring into another topology (pure): the backup's keyspace replication against the datacenters
and node counts of the cluster restored into, rewritten by `--dc-map` or `--replication`; and which
nodes' commit logs a replay needs.

Cassandra accepts a keyspace whose replication it cannot satisfy (RF 3 in a one-node datacenter:
every write at QUORUM then fails), and 5.0 refuses a datacenter it does not know. Both are reported
before anything is downloaded, with the flag that fixes them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from dmf.core.errors import InputError, quote
from dmf.core.schema import object_name, split_statements

_PAIR = re.compile(r"'((?:[^']|'')*)'\s*:\s*('(?:[^']|'')*'|[0-9]+)")
_MAP = re.compile(r"\{[^{}]*\}")
_REPLICATION = re.compile(r"(replication\s*=\s*)(\{[^{}]*\})", re.IGNORECASE)
_DC = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SIMPLE = "SimpleStrategy"
NTS = "NetworkTopologyStrategy"


def parse_map(text: str, name: str) -> dict[str, str]:
    """A CQL map of quoted strings (values quoted or bare numbers): `{'class': 'SimpleStrategy', ...}`."""
    text = text.strip()
    if not _MAP.fullmatch(text):
        raise InputError(f"invalid {name} {quote(text)}: expected a CQL map such as "
                         "\"{'class': 'NetworkTopologyStrategy', 'dc1': 3}\"")
    pairs = _PAIR.findall(text)
    rebuilt = "{" + ", ".join(f"'{k}': {v}" for k, v in pairs) + "}"
    if re.sub(r"\s", "", rebuilt) != re.sub(r"\s", "", text):
        raise InputError(f"invalid {name} {quote(text)}: only 'key': 'value' pairs are allowed")
    return {k.replace("''", "'"): v.strip("'").replace("''", "'") for k, v in pairs}


def strategy(replication: Mapping[str, str]) -> str:
    return replication.get("class", "").rsplit(".", 1)[-1]


def parse_replication(text: str) -> dict[str, str]:
    """`--replication`: SimpleStrategy with a replication_factor, or NetworkTopologyStrategy with an RF
    per datacenter, each a positive whole number."""
    replication = parse_map(text, "--replication")
    kind = strategy(replication)
    factors = {k: v for k, v in replication.items() if k != "class"}
    if kind == SIMPLE:
        ok = list(factors) == ["replication_factor"]
    elif kind == NTS:
        ok = bool(factors) and all(_DC.fullmatch(k) for k in factors)
    else:
        ok = False
    if not ok or not all(v.isdigit() and int(v) > 0 for v in factors.values()):
        raise InputError(f"invalid --replication {quote(text)}: SimpleStrategy with 'replication_factor', or "
                         "NetworkTopologyStrategy with a datacenter name and RF per pair")
    return replication


def parse_dc_map(text: str) -> dict[str, str]:
    """`--dc-map old:new[,old2:new2]`: the backup's datacenter names as the target cluster calls them."""
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        old, sep, new = pair.strip().partition(":")
        if not sep or not _DC.fullmatch(old) or not _DC.fullmatch(new) or old in mapping:
            raise InputError(f"invalid --dc-map {quote(text)}: expected old:new pairs of datacenter names, "
                             "comma-separated, each old name once")
        mapping[old] = new
    return mapping


def format_map(replication: Mapping[str, str]) -> str:
    def value(v: str) -> str:
        return v if v.isdigit() else "'" + v.replace("'", "''") + "'"
    return "{" + ", ".join(f"'{k}': {value(v)}" for k, v in replication.items()) + "}"


def _problems(keyspace: str, replication: Mapping[str, str], datacenters: Mapping[str, int]) -> list[str]:
    kind = strategy(replication)
    nodes = sum(datacenters.values())
    factors = {k: v for k, v in replication.items() if k != "class"}
    if kind == SIMPLE:
        rf = int(factors.get("replication_factor", "0"))
        return [f"RF {rf} on {nodes} node(s)"] if rf > nodes else []
    if kind != NTS:
        return []  # a custom strategy: Cassandra judges it
    problems = []
    for dc, rf in factors.items():
        if dc not in datacenters:
            problems.append(f"datacenter {quote(dc)} (RF {rf}) does not exist here")
        elif int(rf) > datacenters[dc]:
            problems.append(f"RF {rf} in {quote(dc)}, which has {datacenters[dc]} node(s)")
    return problems


def fit_replication(cql: str, keyspace: str, datacenters: Mapping[str, int], dc_map: Mapping[str, str] | None = None,
                    replication: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The schema CQL with the keyspace's replication rewritten (`replication` replaces it; `dc_map`
    renames its datacenters), and the replication used. InputError, in one line, when the cluster
    (its datacenters and their node counts) cannot hold it."""
    statements = split_statements(cql)
    for i, statement in enumerate(statements):
        named = object_name(statement)
        if named is None or named[0] != "KEYSPACE" or named[1] != keyspace:
            continue
        found = _REPLICATION.search(statement)
        if found is None:
            return cql, ""
        stored = parse_map(found.group(2), f"replication of keyspace {keyspace}")
        if replication is not None:
            chosen = dict(replication)
        else:
            chosen = {(dc_map or {}).get(k, k) if k != "class" else k: v for k, v in stored.items()}
        problems = _problems(keyspace, chosen, datacenters)
        if problems:
            here = ", ".join(f"{dc} ({n} node(s))" for dc, n in sorted(datacenters.items()))
            raise InputError(f"keyspace {keyspace} cannot be created as backed up ({format_map(chosen)}): "
                             f"{'; '.join(problems)}. This cluster has {here}: pass --dc-map OLD:NEW to rename "
                             "datacenters, or --replication '{...}' to set it")
        statements[i] = statement[:found.start(2)] + format_map(chosen) + statement[found.end(2):]
        return "\n".join(statements), format_map(chosen)
    return cql, ""


def check_replay_nodes(segment_host_ids: set[str], host_ids: Mapping[str, str]) -> None:
    """A commit-log segment replays only on the node that wrote it (Cassandra reads it at start-up, for
    the tables it holds): segments of host IDs none of HOSTS has would be skipped, their writes lost."""
    missing = sorted(segment_host_ids - set(host_ids.values()))
    if missing:
        raise InputError(f"--replay-commitlogs: commit logs of host ID(s) {', '.join(missing)} are needed up to that "
                         f"time, and no host of HOSTS ({', '.join(sorted(host_ids))}) has that host ID; a segment "
                         "replays only on the node that wrote it. Include those nodes in HOSTS or, restoring into "
                         "another cluster, restore without --replay-commitlogs and fetch them with --get-commitlogs "
                         "(see the runbook)")
