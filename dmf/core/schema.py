"""Schema CQL kept with a backup, turned into the statements a restore runs (pure)."""
from __future__ import annotations

import re

from dmf.core.targets import DbTarget

_CREATE = re.compile(r"^\s*CREATE\s+(KEYSPACE|TABLE|TYPE|INDEX|CUSTOM INDEX|MATERIALIZED VIEW)\s+(IF NOT EXISTS\s+)?"
                     r"(?P<name>[\w\".]+)", re.IGNORECASE)


_ON_TABLE = re.compile(r"\bON\s+\"?(\w+)\"?\.\"?(\w+)\"?", re.IGNORECASE)


def split_statements(cql: str) -> list[str]:
    """One statement per item; DESCRIBE output ends each with ';' at the end of a line."""
    statements, current = [], []
    for line in cql.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip())
            current = []
    if current and "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def object_name(statement: str) -> tuple[str, str, str | None] | None:
    """(kind, keyspace, name) of a CREATE statement."""
    match = _CREATE.match(statement)
    if not match:
        return None
    kind = match.group(1).upper()
    if kind.endswith("INDEX"):
        on = _ON_TABLE.search(statement)
        return (kind, on.group(1), on.group(2)) if on else None  # named by the table it indexes
    parts = [p.strip('"') for p in match.group("name").split(".")]
    if kind == "KEYSPACE":
        return kind, parts[0], None
    return (kind, parts[0], parts[1]) if len(parts) == 2 else None


# Built from the table's data once it is loaded: Cassandra 5.0 refuses SSTables streamed whole by
# sstableloader into a table that already has a storage-attached index ("Incomplete per-SSTable
# index build": the loader does not send the SAI components), so indexes and views come after.
AFTER_LOAD = frozenset({"INDEX", "CUSTOM INDEX", "MATERIALIZED VIEW"})


def restore_statements(cql: str, target: DbTarget, after_load: bool = False) -> list[str]:
    """The keyspace, user types and the target's tables, or (`after_load`) their indexes and
    views, each made idempotent with IF NOT EXISTS so a rerun or an existing keyspace is harmless."""
    chosen = []
    for statement in split_statements(cql):
        named = object_name(statement)
        if named is None:
            continue
        kind, keyspace, name = named
        if keyspace != target.keyspace or (kind in AFTER_LOAD) != after_load:
            continue
        if kind != "KEYSPACE" and kind != "TYPE" and target.table and name != target.table:
            continue
        if not re.match(r"^\s*CREATE\s+\S+(\s+INDEX|\s+VIEW)?\s+IF NOT EXISTS", statement, re.IGNORECASE):
            statement = re.sub(r"^(\s*CREATE\s+(?:CUSTOM\s+INDEX|MATERIALIZED\s+VIEW|\w+))", r"\1 IF NOT EXISTS",
                               statement, count=1, flags=re.IGNORECASE)
        chosen.append(statement)
    order = {"KEYSPACE": 0, "TYPE": 1, "TABLE": 2, "INDEX": 3, "CUSTOM INDEX": 3, "MATERIALIZED VIEW": 4}
    return sorted(chosen, key=lambda s: order[object_name(s)[0]])


_TABLE_ID_CLAUSE = re.compile(r"\bWITH\s+ID\s*=\s*[0-9a-fA-F-]{36}\s*(AND\b|;)", re.IGNORECASE)
_CREATE_HEAD = re.compile(r"^(\s*CREATE\s+(?:TABLE|TYPE)\s+(?:IF\s+NOT\s+EXISTS\s+)?)[\w\".]+", re.IGNORECASE)


def copy_statements(cql: str, source: DbTarget, into: DbTarget) -> list[str]:
    """The statements that create `into` as a copy of the table `source`: the source keyspace's user
    types (in the copy's keyspace) and the table under its new name, with a new table ID (the source's
    is taken) and without indexes or views (their names are the source's)."""
    statements = []
    for statement in restore_statements(cql, source):
        kind, _, name = object_name(statement)
        if kind == "KEYSPACE":
            continue
        new_name = f'"{into.keyspace}"."{into.table if kind == "TABLE" else name}"'
        statement = _CREATE_HEAD.sub(lambda m: m.group(1) + new_name, statement, count=1)
        if kind == "TABLE":
            statement = _TABLE_ID_CLAUSE.sub(lambda m: "WITH" if m.group(1).upper() == "AND" else ";", statement)
        statements.append(statement)
    return statements
