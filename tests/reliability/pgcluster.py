"""A private PostgreSQL 15 cluster for one scenario run: it can be restarted without touching anyone else.

The machine's shared server (``DATABASE_URL``) serves every other test; the
reliability runner restarts Postgres as a fault, so it runs its own cluster:
``initdb`` into a temporary directory, ``postgres`` on a free TCP port of
127.0.0.1 with its unix socket in the same directory, trust authentication,
``fsync=off`` and small buffers (nothing here needs durability across a
power cut: a *server* restart keeps every committed transaction either way,
since the WAL is written, if not synced, before the commit returns; so
``synchronous_commit`` stays on: off, an immediate stop loses the last commits).

PostgreSQL refuses to run as root; when we are root (here and in CI) the
cluster belongs to, and runs as, the ``postgres`` OS user.

``stop(mode)`` is ``pg_ctl stop -m fast`` (SIGINT: roll back open
transactions, disconnect every client, checkpoint) or ``-m immediate``
(SIGQUIT: every backend dies at once, crash recovery at the next start);
``start()`` brings it back on the same port and data directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sim.broker import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"  # the OS user the cluster runs as when we are root
STOP_SIGNALS = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class ClusterError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


def _run_as_kwargs() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(RUN_AS)
    except KeyError as exc:
        raise ClusterError(
            f"running as root, and PostgreSQL refuses to run as root, but there is no '{RUN_AS}' OS user to "
            "run the private cluster as: install the Debian package postgresql-15 (it creates the user) "
            "or run the tests as an ordinary user"
        ) from exc
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class PrivateCluster:
    """``start()`` (initdb on first use), ``stop(mode)``, ``restart(mode, pause)``, ``destroy()``; ``dsn``."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.directory = Path(tempfile.mkdtemp(prefix="kleer-pg-"))
        self.data = self.directory / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._as = _run_as_kwargs()
        self.restarts = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid``: the postmaster that owns the data directory, if any."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _binary(self, name: str) -> str:
        path = PG_BIN / name
        if not path.exists():
            raise ClusterError(f"{path} is missing: install the Debian package postgresql-15 "
                               "(or set PG_BIN to the directory holding initdb and postgres)")
        return str(path)

    def _initdb(self) -> None:
        if self._as:
            os.chown(self.directory, self._as["user"], self._as["group"])
        result = subprocess.run(
            [self._binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync", "--no-instructions"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, **self._as,
        )
        if result.returncode != 0:
            raise ClusterError(f"initdb into {self.data} failed ({result.returncode}):\n"
                               f"{result.stdout.decode(errors='replace')[-2000:]}")

    def _server_args(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.directory),
            "fsync": "off", "full_page_writes": "off", "shared_buffers": "32MB",
            "max_connections": "100", "max_wal_size": "256MB", "logging_collector": "off",
        }
        args = [self._binary("postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def start_command(self) -> str:
        """The shell command that starts this cluster by hand (a kept cluster of a failed run)."""
        command = " ".join(self._server_args())
        return f"setpriv --reuid={RUN_AS} --regid={RUN_AS} --clear-groups {command}" if self._as else command

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (creating the cluster on first use); returns once it accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== reliability runner: start #{self.restarts + 1} of the private cluster ===\n".encode())
            self._process = subprocess.Popen(self._server_args(), stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True, **self._as)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ClusterError(f"the private PostgreSQL cluster exited at start; see {self.log_path}")
            ready = subprocess.run(
                [self._binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                check=False,
            )
            if ready.returncode == 0 and self.postmaster_pid() == self._process.pid:  # type: ignore[union-attr]
                return  # ours answers (not a postmaster left over from before)
            time.sleep(0.1)
        raise ClusterError(f"the private PostgreSQL cluster did not accept connections within {timeout:.0f}s; "
                           f"see {self.log_path}")

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """``pg_ctl stop -m <mode>`` (fast: SIGINT, immediate: SIGQUIT to the postmaster named in
        ``postmaster.pid``, whichever process started it); waits until it is down."""
        process, self._process = self._process, None
        if (self.data / "postmaster.pid").exists():
            subprocess.run([self._binary("pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w",
                            "-t", str(int(timeout))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **self._as)
        if process is None or process.poll() is not None:
            return
        process.send_signal(STOP_SIGNALS[mode])
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def restart(self, mode: str, pause: float) -> None:
        """Stop (``mode``), stay down ``pause`` seconds, start again on the same port (blocking)."""
        self.stop(mode)
        time.sleep(pause)
        self.restarts += 1
        self.start()

    def destroy(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop("fast")
        shutil.rmtree(self.directory, ignore_errors=True)
