"""The batch CLI as users (and outside checks) call it: a real process, real exit codes."""

import json

import pytest
from conftest import run_cli

run = run_cli


def test_demo_runs_end_to_end_on_the_tiny_preset(tmp_path):
    result = run("demo", "--workdir", tmp_path, "--preset", "tiny", "--no-serve")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "shop.db").exists() and (tmp_path / "analysis" / "report.html").exists()
    assert "events imported" in result.stdout


def test_generate_import_stats_analyze_forget(tmp_path):
    assert run("generate", "--preset", "tiny", "--out", tmp_path / "shop").returncode == 0
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    result = run(
        "import",
        "--db",
        db,
        "--events",
        tmp_path / "shop" / "events.csv",
        "--items",
        tmp_path / "shop" / "items.csv",
        "--users",
        tmp_path / "shop" / "users.csv",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accepted"] > 1000 and report["rejected"] == 0 and report["duplicates"] == 0
    again = json.loads(
        run("import", "--db", db, "--events", tmp_path / "shop" / "events.csv", cwd=tmp_path).stdout
    )
    assert again["accepted"] == 0 and again["duplicates"] == report["accepted"]
    stats = json.loads(run("stats", "--db", db).stdout)
    assert stats["events"] == report["accepted"]
    analysis = run("analyze", "--db", db, "--out", tmp_path / "analysis")
    assert analysis.returncode == 0, analysis.stderr
    assert json.loads(analysis.stdout)["events"] == report["accepted"]
    forgotten = json.loads(run("forget", "--db", db, "--user", "u1").stdout)
    assert forgotten["events"] > 0 and forgotten["profile"] == 1
    built = json.loads(run("interactions", "--db", db, "--half-life-days", "7").stdout)
    assert built["nnz"] > 0 and built["memory_mib"] > 0


def test_generate_retailrocket_format_round_trips_through_import(tmp_path):
    assert (
        run(
            "generate", "--preset", "tiny", "--format", "retailrocket", "--out", tmp_path
        ).returncode
        == 0
    )
    result = run(
        "import",
        "--db",
        f"sqlite:///{tmp_path / 'rr.db'}",
        "--events",
        tmp_path / "events.csv",
        "--format",
        "retailrocket",
        cwd=tmp_path,
    )
    counts = json.loads(result.stdout)
    assert counts["rejected"] == 0 and counts["accepted"] > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "--db", "sqlite:///x.db"], "give at least one of --events"),
        (["import", "--db", "sqlite:///x.db", "--events", "missing.csv"], "does not exist"),
        (["import", "--db", "mysql://h/db", "--events", "e.csv"], "unsupported scheme"),
        (
            ["import", "--db", "sqlite:///x.db", "--events", "e.csv", "--format", "nope"],
            "unknown format",
        ),
        (
            ["import", "--db", "sqlite:///x.db", "--events", "e.csv", "--map", "user_id=a"],
            "must name a source column",
        ),
        (["import", "--events", "e.csv"], "Missing option '--db'"),
        (["analyze", "--out", "o"], "exactly one of --db or --events"),
        (["analyze", "--events", "e.csv", "--out", "o", "--since", "someday"], "since"),
        (["generate", "--preset", "huge", "--out", "o"], "unknown preset"),
        (["import", "--db", "sqlite:///x.db", "--events", "bad.csv"], "lacks column"),
        (["import", "--db", "sqlite:///no/such/dir/x.db", "--events", "e.csv"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    (tmp_path / "e.csv").write_text("user_id,item_id,event_type,timestamp\nu,i,view,1767000000\n")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_rejected_rows_are_reported_not_fatal(tmp_path):
    (tmp_path / "e.csv").write_text(
        "user_id,item_id,event_type,timestamp\nu,i,view,1767000000\nu,i,explode,1767000000\n"
    )
    result = run("import", "--db", "sqlite:///x.db", "--events", "e.csv", cwd=tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout)["rejected"] == 1
    assert "explode" in (tmp_path / "e.rejects.csv").read_text()
