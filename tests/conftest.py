"""Shared fixtures: every store test runs on SQLite and on PostgreSQL. Also the helpers that run
`equilibra` as a real process (the CLI, the server).

PostgreSQL comes from EQUILIBRA_TEST_POSTGRES (`make test` and `.ci/run` start a server and set
it). Without it the PostgreSQL cases skip locally, but fail in CI (CI=true or
EQUILIBRA_REQUIRE_POSTGRES=1): a conformance suite that silently ran on one backend would lie.
Redis is the same: the `redis_server` fixture starts Debian's `redis-server` on a free port
(scripts/test.sh installs it); without it the Redis cases skip locally and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from equilibra.store import Store, open_store

POSTGRES_URL = os.environ.get("EQUILIBRA_TEST_POSTGRES")
REQUIRE_POSTGRES = (
    os.environ.get("EQUILIBRA_REQUIRE_POSTGRES") == "1"
    or os.environ.get("CI", "").lower() == "true"
)
DATASETS = Path(
    os.environ.get(
        "EQUILIBRA_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
)


def _postgres_store() -> Store:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("EQUILIBRA_TEST_POSTGRES is not set but PostgreSQL tests are required")
        pytest.skip("EQUILIBRA_TEST_POSTGRES not set")
    store = open_store(POSTGRES_URL)
    with store._lock:  # type: ignore[attr-defined]
        cur = store._conn.cursor()  # type: ignore[attr-defined]
        cur.execute("TRUNCATE events, items, users, impressions, snapshots")
        store._conn.commit()  # type: ignore[attr-defined]
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        backend = open_store(f"sqlite:///{tmp_path / 'shop.db'}")
    else:
        backend = _postgres_store()
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="session")
def tiny_shop():
    from equilibra.data.synthetic import generate_shop

    return generate_shop("tiny", seed=7)


def dataset(*parts: str) -> Path:
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"dataset {path} not available")
    return path


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`equilibra ARGS` as a real process, as users and outside checks run it."""
    return subprocess.run(
        [sys.executable, "-m", "equilibra.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_process(
    settings: dict[str, str], port: int, start_within_s: float = 90.0
) -> subprocess.Popen[str]:
    """`equilibra serve` as a real process with these EQUILIBRA_* variables, once it answers
    /health (AssertionError, with what it printed, if it exits or does not answer in time)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "equilibra.cli", "serve", "--port", str(port),
         "--log-level", "warning"],
        env={**os.environ, **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.time() + start_within_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stdout.read() if process.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return process
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"serve did not answer /health within {start_within_s:.0f} s")


class RedisServer:
    """A throwaway `redis-server` on loopback (no persistence), which a test may stop and start."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if REQUIRE_POSTGRES:  # CI requires every server backend
            pytest.fail("redis-server is not installed but the Redis tests are required")
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
