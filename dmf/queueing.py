"""`-a/--async`: queue a run of the matching deployment and return at once."""
from __future__ import annotations

from dataclasses import dataclass

from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from dmf.core.errors import DmfError

DEPLOYMENTS = {
    "backup-snapshot": "backup-snapshot/on-demand",
    "backup-list": "backup-list/on-demand",
    "restore-snapshot": "restore-snapshot/restore",
}


class QueueError(DmfError):
    pass


@dataclass(frozen=True)
class Queued:
    deployment: str
    flow_run_id: str
    flow_run_name: str
    ui_url: str | None

    def describe(self) -> str:
        lines = [f"queued {self.deployment} as flow run '{self.flow_run_name}' ({self.flow_run_id})"]
        if self.ui_url:
            lines.append(f"  UI:     {self.ui_url}/runs/flow-run/{self.flow_run_id}")
        lines.append(f"  follow: prefect flow-run watch {self.flow_run_id}   (logs: prefect flow-run logs "
                     f"{self.flow_run_id})")
        return "\n".join(lines)


def queue(command: str, parameters: dict) -> Queued:
    deployment = DEPLOYMENTS[command]
    if not PREFECT_API_URL.value():
        raise QueueError("--async needs a Prefect server: set PREFECT_API_URL (the test bed's "
                         "`dmf-testbed up` starts one and points the profile at it)")
    try:
        run = run_deployment(deployment, parameters={k: v for k, v in parameters.items() if v is not None},
                             timeout=0)
    except ObjectNotFound:
        raise QueueError(f"no deployment {deployment!r} on {PREFECT_API_URL.value()}: register them with "
                         "`make deployments` (prefect deploy --all --prefect-file deployments/prefect.yaml)") from None
    except (OSError, RuntimeError) as exc:
        raise QueueError(f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: {exc}") from None
    return Queued(deployment, str(run.id), run.name, PREFECT_UI_URL.value())
