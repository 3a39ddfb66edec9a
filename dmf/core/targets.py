"""HOSTS and DB_TARGET: validated before anything reaches a shell, a key or a path."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dmf.core.errors import InputError

SYSTEM_KEYSPACES = frozenset({
    "system", "system_schema", "system_auth", "system_distributed", "system_traces", "system_views",
    "system_virtual_schema", "system_cluster_metadata",
})
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,48}")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.fullmatch(name))


def is_host(name: str) -> bool:
    """An IPv4/IPv6 address or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def parse_hosts(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    shown = value if isinstance(value, str) else ",".join(map(str, value))
    hosts = tuple(str(item).strip() for item in items)
    if not hosts or hosts == ("",):
        raise InputError("invalid HOSTS: give at least one host name or IP address (comma-separated)")
    for host in hosts:
        if not host:
            raise InputError(f"invalid HOSTS '{shown}': empty host name")
        if not is_host(host):
            raise InputError(f"invalid HOSTS '{shown}': '{host}' is not a host name or IP address")
    duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
    if duplicates:
        raise InputError(f"invalid HOSTS '{shown}': {', '.join(duplicates)} given more than once")
    return hosts


@dataclass(frozen=True)
class DbTarget:
    """`keyspace`, `keyspace.table`, or neither (every non-system keyspace)."""

    keyspace: str | None = None
    table: str | None = None

    @classmethod
    def parse(cls, value: str | None) -> DbTarget:
        if value is None or value == "":
            return cls()
        parts = value.split(".")
        if len(parts) > 2 or not all(is_identifier(p) for p in parts):
            raise InputError(f"invalid DB_TARGET '{value}': expected keyspace or keyspace.table "
                             "(letters, digits and _, at most 48 each)")
        if parts[0] in SYSTEM_KEYSPACES:
            raise InputError(f"invalid DB_TARGET '{value}': system keyspaces are not backed up")
        return cls(*parts) if len(parts) == 2 else cls(parts[0])

    def __str__(self) -> str:
        if self.keyspace is None:
            return ""
        return f"{self.keyspace}.{self.table}" if self.table else self.keyspace

    def covers(self, keyspace: str, table: str) -> bool:
        if self.keyspace is None:
            return keyspace not in SYSTEM_KEYSPACES
        return keyspace == self.keyspace and (self.table is None or table == self.table)

    def nodetool_args(self) -> list[str]:
        if self.keyspace is None:
            return []
        return ["-kt", f"{self.keyspace}.{self.table}"] if self.table else [self.keyspace]

    def keyspace_table_args(self) -> list[str]:
        if self.keyspace is None:
            return []
        return [self.keyspace, self.table] if self.table else [self.keyspace]
