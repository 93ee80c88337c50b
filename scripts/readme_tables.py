"""Regenerate README.md's configuration and metrics tables from their one home in the code.

Run: .venv/bin/python scripts/readme_tables.py  (tests check the README is current)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402

from libs.config import VARIABLES  # noqa: E402
from libs.observability import metrics  # noqa: E402


def config_table() -> str:
    rows = ["| Variable | Meaning | Default |", "|---|---|---|"]
    for v in VARIABLES:
        default = f"`{v.default}`" if v.default is not None else ("secret" if v.secret else "—")
        rows.append(f"| `{v.name}` | {v.description} | {default} |")
    return "\n".join(rows)


def metrics_table() -> str:
    rows = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for name in sorted(dir(metrics)):
        metric = getattr(metrics, name)
        if isinstance(metric, Counter | Gauge | Histogram):
            kind = type(metric).__name__.lower()
            full = metric._name + ("_total" if kind == "counter" else "")
            labels = ", ".join(metric._labelnames) or "—"
            rows.append(f"| `{full}` | {kind} | {labels} | {metric._documentation} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    for marker, table in (("config-table", config_table()), ("metrics-table", metrics_table())):
        pattern = re.compile(rf"(<!-- {marker} -->\n).*?(\n<!-- /{marker} -->)", re.S)
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), readme)
    return readme


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(render(path.read_text()))
    print("README.md tables regenerated")
