"""Where a rolling point-in-time replay stands, node by node (pure), kept in PATH/replay-state.json.

    pending ──drain──▶ restarting ──log shows the replay──▶ done

A node is marked `restarting` (with where its system.log ended) before it is drained, and `done`
once Cassandra's log shows the replay. A rerun skips `done` nodes; for a `restarting` node (the
manager died during its restart) it reads the log past the recorded offset: a replay there means
the node replayed on its own and is `done`, without a second replay; none means it goes again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from dmf.core.errors import InputError, quote

PENDING, RESTARTING, DONE = "pending", "restarting", "done"
STATE_FILE = "replay-state.json"


@dataclass(frozen=True)
class NodeReplay:
    state: str = PENDING
    log_offset: int = 0     # size of the node's system.log before its restart
    mutations: int = 0      # what Cassandra reported replayed, once done


@dataclass
class ReplayState:
    at: str                  # --time, YYYYmmddHHMMSS
    tables: tuple[str, ...]
    nodes: dict[str, NodeReplay] = field(default_factory=dict)

    def node(self, address: str) -> NodeReplay:
        return self.nodes.get(address, NodeReplay())

    def restarting(self, address: str, log_offset: int) -> None:
        self.nodes[address] = NodeReplay(RESTARTING, log_offset)

    def done(self, address: str, mutations: int) -> None:
        self.nodes[address] = NodeReplay(DONE, self.node(address).log_offset, mutations)

    def pending(self, address: str) -> None:
        self.nodes[address] = NodeReplay()

    def replayed(self, hosts: tuple[str, ...]) -> list[str]:
        return [h for h in hosts if self.node(h).state == DONE]

    def to_json(self) -> str:
        return json.dumps({"at": self.at, "tables": list(self.tables),
                           "nodes": {a: vars(n) for a, n in self.nodes.items()}}, indent=1)

    @classmethod
    def load(cls, text: str | None, at: str, tables: list[str], path: str) -> ReplayState:
        """The state a rerun resumes from; a state of another replay in the same PATH is refused
        (its nodes replayed to another time: resuming it would mix two points in time)."""
        if text is None:
            return cls(at, tuple(tables))
        try:
            doc = json.loads(text)
            state = cls(str(doc["at"]), tuple(doc["tables"]),
                        {a: NodeReplay(**n) for a, n in doc["nodes"].items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a replay state dmf wrote ({exc}); remove it to start over") from None
        if (state.at, state.tables) != (at, tuple(tables)):
            raise InputError(f"{path} is the state of a replay to {state.at} of {quote(','.join(state.tables))}; "
                             "finish that one with its own command, or use another PATH")
        return state


def restarting_hosts(text: str | None) -> set[str]:
    """Nodes an interrupted replay left restarting (down, maybe): the resume brings them back, so the
    restore's check of HOSTS lets them be down. A damaged state is reported later, when loaded."""
    try:
        return {a for a, n in json.loads(text or "{}").get("nodes", {}).items() if n.get("state") == RESTARTING}
    except (ValueError, AttributeError):
        return set()


def continue_message(address: str, error: str, state: ReplayState, hosts: tuple[str, ...], command: str) -> str:
    """One line: where the rollout stopped, which nodes are replayed and which not, and how to go on."""
    replayed = state.replayed(hosts)
    rest = [h for h in hosts if h not in replayed]
    return (f"replay stopped at {address}: {error}. Replayed: {', '.join(replayed) or 'none'}; not replayed: "
            f"{', '.join(rest)}. Bring {address} back (its restore keys are already removed), then continue "
            f"with: {command}")
