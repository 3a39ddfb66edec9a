"""What `dmf restore snapshot` and the restore-snapshot flow are asked to do, parsed and checked once
(pure). The CLI parses it before any flow starts; the flow parses its own parameters again with the
same code (a deployment run from the UI or `-a` reaches the flow without the CLI), so both refuse the
same inputs with the same one-line message."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dmf.core.errors import InputError
from dmf.core.limits import check_limit
from dmf.core.restore_checks import absolute_path, check_into
from dmf.core.scratch import HEAP_MIB, HEAP_RANGE_MIB
from dmf.core.targets import DbTarget, parse_hosts
from dmf.core.timestamps import format_ts, parse_ts
from dmf.core.topology import format_map, parse_dc_map, parse_replication

# "node" (the default): the nodes fetch and load their own files; the plan takes the worker path where
# they cannot (dmf.restore_plan). "sstableloader" and "import": every byte through the worker.
MODES = ("node", "sstableloader", "import")
REPLAY_ON = ("scratch", "nodes")


@dataclass(frozen=True)
class RestoreRequest:
    hosts: tuple[str, ...]
    path: str                         # absolute, as given (the flow resolves symlinks on its machine)
    target: DbTarget                  # a keyspace or keyspace.table
    at: datetime | None               # None: the time the run starts
    mode: str = "node"
    restore_schema: bool = False
    get_commitlogs: bool = False
    replay_commitlogs: bool = False
    keep_files: bool = False
    allow_host_subset: bool = False
    dc_map: Mapping[str, str] | None = field(default=None, hash=False)
    replication: Mapping[str, str] | None = field(default=None, hash=False)
    truncate_first: bool = False      # confirmed: parse refuses it without `yes`
    into: DbTarget | None = None
    max_download_mib_s: float | None = None
    replay_on: str = "scratch"        # where replay_commitlogs replays: a scratch Cassandra or the nodes
    scratch_heap_mib: int | None = None  # the scratch Cassandra's heap (None: HEAP_MIB)

    @classmethod
    def parse(cls, hosts: str | Sequence[str], path: str, db_target: str, *, cwd: str | None = None,
              time: str | int | None = None, mode: str = "node", restore_schema: bool = False,
              get_commitlogs: bool = False, replay_commitlogs: bool = False, keep_files: bool = False,
              allow_host_subset: bool = False, dc_map: str | None = None, replication: str | None = None,
              truncate_first: bool = False, yes: bool = False, into: str | None = None,
              max_download_mib_s: float | None = None, replay_on: str = "scratch",
              scratch_heap_mib: int | None = None) -> RestoreRequest:
        """The CLI's words and the flow's parameters alike; InputError, one line, on the first rule broken.

        `cwd`: the operator's working directory, against which a relative PATH is taken (None: a
        queued or deployed run, where a relative PATH is refused)."""
        host_list = parse_hosts(hosts)
        target = DbTarget.parse(db_target)
        check_limit(max_download_mib_s, "--max-download-mib-s")
        if target.keyspace is None:
            raise InputError("DB_TARGET is required: keyspace or keyspace.table")
        at = parse_ts(time, name="--time") if time is not None and time != "" else None
        if mode not in MODES:
            raise InputError(f"invalid --mode {mode!r}: node, sstableloader or import")
        if replay_on not in REPLAY_ON:
            raise InputError(f"invalid --replay-on {replay_on!r}: scratch or nodes")
        renamed, replaced, copy_to = _rewrites(target, dc_map, replication, into, restore_schema,
                                               replay_commitlogs and replay_on == "nodes")
        _check_heap(scratch_heap_mib, replay_commitlogs and replay_on == "scratch")
        if truncate_first and not yes:
            raise InputError(f"--truncate-first empties {target} (every row written since the backup is lost; "
                             "Cassandra's auto_snapshot keeps a copy on each node): add --yes to confirm")
        return cls(host_list, absolute_path(path, cwd), target, at, mode, restore_schema, get_commitlogs,
                   replay_commitlogs, keep_files, allow_host_subset, renamed, replaced, truncate_first, copy_to,
                   max_download_mib_s, replay_on, scratch_heap_mib)

    def flow_params(self) -> dict:
        """The restore-snapshot flow's parameters that parse back into this request (blocks aside)."""
        return dict(hosts=",".join(self.hosts), path=self.path, db_target=str(self.target),
                    time=format_ts(self.at) if self.at else None, mode=self.mode, restore_schema=self.restore_schema,
                    get_commitlogs=self.get_commitlogs, replay_commitlogs=self.replay_commitlogs,
                    keep_files=self.keep_files, allow_host_subset=self.allow_host_subset,
                    dc_map=",".join(f"{old}:{new}" for old, new in self.dc_map.items()) if self.dc_map else None,
                    replication=format_map(self.replication) if self.replication else None,
                    truncate_first=self.truncate_first, yes=self.truncate_first,
                    into=str(self.into) if self.into else None, max_download_mib_s=self.max_download_mib_s,
                    replay_on=self.replay_on, scratch_heap_mib=self.scratch_heap_mib)

    @property
    def with_commitlogs(self) -> bool:
        """The commit logs up to the time are fetched (replaying needs them)."""
        return self.get_commitlogs or self.replay_commitlogs

    @property
    def replays_on_nodes(self) -> bool:
        """The commit logs are replayed by the nodes themselves (rolling restarts), not a scratch Cassandra."""
        return self.replay_commitlogs and self.replay_on == "nodes"

    @property
    def scratch_heap(self) -> int:
        """The scratch Cassandra's heap in MiB."""
        return self.scratch_heap_mib or HEAP_MIB

    @property
    def reads_schema(self) -> bool:
        """The snapshot's schema is needed: to create the keyspace/table, or the --into copy."""
        return self.restore_schema or self.into is not None


def _check_heap(heap_mib: int | None, replays_in_scratch: bool) -> None:
    if heap_mib is None:
        return
    low, high = HEAP_RANGE_MIB
    if isinstance(heap_mib, bool) or not isinstance(heap_mib, int) or not low <= heap_mib <= high:
        raise InputError(f"--scratch-heap-mib must be a whole number of MiB from {low} to {high}, not {heap_mib!r}")
    if not replays_in_scratch:
        raise InputError("--scratch-heap-mib sizes the scratch Cassandra of --replay-commitlogs (--replay-on "
                         "scratch): add --replay-commitlogs, or leave it out")


def _rewrites(target: DbTarget, dc_map: str | None, replication: str | None, into: str | None, restore_schema: bool,
              replays_on_nodes: bool) -> tuple[dict | None, dict | None, DbTarget | None]:
    """--dc-map or --replication (one, with --schema) and --into (no replay on the nodes), parsed."""
    renamed = parse_dc_map(dc_map) if dc_map else None
    replaced = parse_replication(replication) if replication else None
    copy_to = check_into(DbTarget.parse(into), target, restore_schema, replays_on_nodes) if into else None
    if (renamed or replaced) and not restore_schema:
        raise InputError("--dc-map and --replication rewrite the keyspace --schema creates: add --schema")
    if renamed and replaced:
        raise InputError("--dc-map and --replication both rewrite the replication: give one")
    return renamed, replaced, copy_to
