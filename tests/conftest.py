"""Shared fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from EQUILIBRA_TEST_POSTGRES (`make test` and `.ci/run` start a server and set
it). Without it the PostgreSQL cases skip locally, but fail in CI (CI=true or
EQUILIBRA_REQUIRE_POSTGRES=1): a conformance suite that silently ran on one backend would lie.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
