"""``make bench``: run every benchmark in turn; each prints its numbers and writes bench/results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "bench_events",
    "bench_kleer_sim",
    "bench_hubspot_sim",
    "bench_outbound",
    "bench_inbound",
    "bench_operations",
]


def main() -> int:
    scripts = [HERE / f"{name}.py" for name in ORDER if (HERE / f"{name}.py").exists()]
    scripts += sorted(p for p in HERE.glob("bench_*.py") if p not in scripts)
    failed = []
    for i, script in enumerate(scripts, 1):
        print(f"\n=== [{i}/{len(scripts)}] {script.stem} ===", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        print(
            f"=== {script.stem}: {'ok' if result.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f}s"
        )
        if result.returncode != 0:
            failed.append(script.stem)
    print(f"\nresults in {HERE / 'results'}")
    if failed:
        print(f"failed: {', '.join(failed)} (see their output above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
