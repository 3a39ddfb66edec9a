"""HOSTS and DB_TARGET: validated before anything reaches a shell, a key or a path."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dmf.core.errors import InputError, quote

SYSTEM_KEYSPACES = frozenset({
    "system", "system_schema", "system_auth", "system_distributed", "system_traces", "system_views",
    "system_virtual_schema", "system_cluster_metadata",
})
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,48}")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")


def is_identifier(name: str) -> bool:
    """A Cassandra unquoted identifier (keyspace, table or index name)."""
    return isinstance(name, str) and _IDENTIFIER.fullmatch(name) is not None


def is_host(name: str) -> bool:
    """An IPv4/IPv6 address or an RFC 1123 host name: safe as an SSH target, an argument and a key component."""
    if not isinstance(name, str) or "%" in name:  # an IPv6 scope ID ('fe80::1%eth0') may hold any character
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if _DIGITS_AND_DOTS.fullmatch(name):
        return False  # a mistyped address such as 10.0.0.256, not a host name
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _identity(host: str) -> object:
    """What makes two spellings the same host: the address value, or the case-insensitive name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return host.lower()


def parse_hosts(value: str | Sequence[str]) -> tuple[str, ...]:
    """HOSTS as typed ('a, b') or as a list (a flow parameter); returned in the given order."""
    if isinstance(value, str):
        shown, items = value, value.split(",")
    elif isinstance(value, Sequence):
        items = list(value)
        shown = ",".join(map(str, items))
    else:
        raise InputError(f"invalid HOSTS {quote(value)}: expected comma-separated host names or IP addresses")
    hosts = tuple(item.strip() if isinstance(item, str) else item for item in items)
    if not any(hosts):
        raise InputError(f"invalid HOSTS {quote(shown)}: expected comma-separated host names or IP addresses")
    seen: set[object] = set()
    for host in hosts:
        if host == "":
            raise InputError(f"invalid HOSTS {quote(shown)}: empty item (two commas in a row, or one at an end)")
        if not is_host(host):
            raise InputError(f"invalid HOSTS {quote(shown)}: {quote(host)} is not a host name or IP address")
        identity = _identity(host)
        if identity in seen:
            raise InputError(f"invalid HOSTS {quote(shown)}: {quote(host)} is given more than once")
        seen.add(identity)
    return hosts


@dataclass(frozen=True)
class DbTarget:
    """`keyspace`, `keyspace.table`, or neither (every non-system keyspace)."""

    keyspace: str | None = None
    table: str | None = None

    def __post_init__(self) -> None:
        # Held to the same rules however it is built: the names reach nodetool, cqlsh and local paths.
        if self.keyspace is None and self.table is None:
            return
        keyspace = self.keyspace or ""
        shown = quote(keyspace if self.table is None else f"{keyspace}.{self.table}")
        if not is_identifier(self.keyspace) or (self.table is not None and not is_identifier(self.table)):
            raise InputError(f"invalid DB_TARGET {shown}: expected keyspace or keyspace.table "
                             "(letters, digits and _, at most 48 each)")
        # Unquoted CQL names are case-insensitive, so 'System_Auth' is system_auth.
        if self.keyspace.lower() in SYSTEM_KEYSPACES:
            raise InputError(f"invalid DB_TARGET {shown}: system keyspaces are not backed up "
                             "(leave DB_TARGET empty for every user keyspace)")

    @classmethod
    def parse(cls, value: str | None) -> DbTarget:
        if value is None or value == "":
            return cls()
        if not isinstance(value, str) or value.count(".") > 1:
            raise InputError(f"invalid DB_TARGET {quote(value)}: expected keyspace or keyspace.table")
        return cls(*value.split("."))

    def __str__(self) -> str:
        if self.keyspace is None:
            return ""
        return self.keyspace if self.table is None else f"{self.keyspace}.{self.table}"

    def covers(self, keyspace: str, table: str) -> bool:
        """Whether the table belongs to this target."""
        if self.keyspace is None:
            return keyspace not in SYSTEM_KEYSPACES
        return keyspace == self.keyspace and (self.table is None or table == self.table)

    def nodetool_args(self) -> list[str]:
        """Scope of `nodetool snapshot`: all keyspaces, one keyspace, or `-kt ks.table`."""
        if self.keyspace is None:
            return []
        return [self.keyspace] if self.table is None else ["-kt", f"{self.keyspace}.{self.table}"]

    def keyspace_table_args(self) -> list[str]:
        """Scope of `nodetool flush`-style commands, which take the keyspace and table as two arguments."""
        if self.keyspace is None:
            return []
        return [self.keyspace] if self.table is None else [self.keyspace, self.table]
