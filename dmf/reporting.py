"""Run figures published as Prefect artifacts, so the UI shows what each run did."""
from __future__ import annotations

from prefect.artifacts import create_table_artifact


def publish_summary(key: str, summary: dict, description: str) -> None:
    """One row per figure; lists are joined so the table stays readable."""
    rows = [{"figure": name, "value": ", ".join(map(str, value)) if isinstance(value, (list, tuple))
             else str(value)} for name, value in summary.items()]
    create_table_artifact(table=rows, key=key, description=description)
