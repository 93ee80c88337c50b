"""OS processes of the system under test: start, SIGKILL, restart, wait until healthy.

Every process is started the way ``services/demo.py`` starts them
(``python -m services.cli ...`` with the environment carrying the
configuration) in its own session, so a SIGKILL hits exactly that process.
Each writes stdout and stderr to ``<logs>/<name>.log``; restarts append to
the same file, after a marker line, so the secret scan covers every
incarnation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[2]


class ProcessFailed(RuntimeError):
    """A process exited when it should be running, or never became healthy."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class ManagedProcess:
    """One named ``kleer-sync`` process (or any command) with its log and health URL."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    module_cli: bool = True  # args are kleer-sync subcommand arguments
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    exits: list[int] = field(default_factory=list)  # exit codes seen of unexpected deaths

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.cli", *self.args] if self.module_cli else list(self.args)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== reliability runner: start #{self.starts + 1} of {self.name} ===\n".encode())
            self.popen = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def sigkill(self) -> None:
        """SIGKILL this process (and anything it started in its session)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self.kills += 1

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def check_running(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            code = self.popen.returncode
            raise ProcessFailed(
                f"{self.name} exited with code {code} (not killed by the runner); last lines of "
                f"{self.log_path}:\n{tail(self.log_path)}"
            )

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float = 45.0) -> float:
        """Wait until ``health_url`` answers 2xx (or just that the process stays up if it has none)."""
        started = time.monotonic()
        deadline = started + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            if self.health_url is None:
                await asyncio.sleep(0.5)
                self.check_running()
                return time.monotonic() - started
            try:
                async with session.get(self.health_url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status < 300:
                        return time.monotonic() - started
                    last = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
        raise ProcessFailed(
            f"{self.name} was not healthy at {self.health_url} within {timeout:.0f}s ({last}); "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
        )
