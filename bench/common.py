"""Small helpers shared by the benchmarks: results files, fresh databases, progress."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg

RESULTS = Path(__file__).parent / "results"
SERVER_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


def dsn_for(database: str) -> str:
    return urlparse(SERVER_DSN)._replace(path=f"/{database}").geturl()


async def fresh_database(name: str) -> str:
    conn = await asyncpg.connect(dsn_for("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn_for(name)


async def drop_database_async(name: str) -> None:
    conn = await asyncpg.connect(dsn_for("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def drop_database(name: str) -> None:
    asyncio.run(drop_database_async(name))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far (Linux /proc); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_pids(database: str) -> list[int]:
    """The PostgreSQL server processes serving ``database`` right now (for their CPU time)."""
    conn = await asyncpg.connect(dsn_for("postgres"))
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        **results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    progress(f"wrote {path}")
    return path
