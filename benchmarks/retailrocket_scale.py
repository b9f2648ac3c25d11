"""RetailRocket-scale import and Interactions build, side by side with a hand-rolled peer.

    python benchmarks/retailrocket_scale.py [--work-dir /tmp/eq-bench] [--runs 3] [--postgres URL]

1. Generates the synthetic `retailrocket` preset (2,756,101 events) once, in RetailRocket's own
   `events.csv` format, and checks its marginals against the published numbers.
2. Imports it into a fresh SQLite file with `equilibra import --format retailrocket` (validation,
   dedupe on event_id, rejects accounting), in a child process so its peak memory is its own;
   side by side, the peer a hand-rolled stack would write: `pandas.read_csv` + `DataFrame.to_sql`
   into SQLite (no validation, no dedupe). Reports the median of `--runs` runs and the ratio.
3. Builds `Interactions` from the store (read + clean + build) and, side by side, the peer:
   `pd.factorize` + `scipy.sparse.csr_matrix` of summed weights. Reports time and size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RETAILROCKET = {
    "events": 2_756_101,
    "view": 2_664_312,
    "add_to_cart": 69_332,
    "purchase": 22_457,
    "visitors": 1_407_580,
    "items": 235_061,
    "days": 138.0,
}

PEER_IMPORT = """
import sqlite3, sys, time, pandas as pd
started = time.perf_counter()
conn = sqlite3.connect(sys.argv[2])
for chunk in pd.read_csv(sys.argv[1], chunksize=250_000):
    chunk.to_sql("events", conn, if_exists="append", index=False)
conn.commit()
print(time.perf_counter() - started)
"""


def child_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_child(args: list[str]) -> tuple[str, float, float]:
    """-> (stdout, wall seconds, peak RSS of the child in MiB)."""
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return result.stdout, time.perf_counter() - started, child_peak_mib()


def generate(work: Path) -> Path:
    events = work / "events.csv"
    if events.exists():
        return events
    from equilibra.cli import shop_marginals
    from equilibra.data.synthetic import generate_shop

    started = time.perf_counter()
    shop = generate_shop("retailrocket")
    shop.write(work, fmt="retailrocket")
    marginals = shop_marginals(shop)
    marginals["generate_seconds"] = round(time.perf_counter() - started, 1)
    (work / "marginals.json").write_text(json.dumps(marginals, indent=2))
    return events


def empty_postgres(url: str) -> None:
    from equilibra.store import open_store

    with open_store(url) as store:
        store._conn.execute("TRUNCATE events, items, users, impressions")  # type: ignore[attr-defined]
        store._conn.commit()  # type: ignore[attr-defined]


def import_runs(events: Path, work: Path, runs: int, db_url: str | None) -> dict[str, object]:
    equilibra_s, peer_s, rates, peaks = [], [], [], []
    report: dict[str, object] = {}
    for run in range(runs):
        db = work / f"import-{run}.db"
        for stale in work.glob(f"import-{run}.db*"):
            stale.unlink()
        url = db_url or f"sqlite:///{db}"
        if db_url:
            empty_postgres(db_url)
        stdout, wall, _ = run_child(
            [
                sys.executable,
                "-m",
                "equilibra.cli",
                "import",
                "--db",
                url,
                "--events",
                str(events),
                "--format",
                "retailrocket",
                "--rejects",
                str(work / "rejects.csv"),
            ]
        )
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure ours first.
        peaks.append(child_peak_mib())
        report = json.loads(stdout)
        equilibra_s.append(wall)
        rates.append(report["rows"] / wall)
        peer_db = work / f"peer-{run}.db"
        peer_db.unlink(missing_ok=True)
        peer_out, _, _ = run_child([sys.executable, "-c", PEER_IMPORT, str(events), str(peer_db)])
        peer_s.append(float(peer_out.strip()))
        peer_db.unlink(missing_ok=True)
        print(f"run {run + 1}: equilibra {wall:.1f}s, peer {peer_s[-1]:.1f}s", file=sys.stderr)
    median = statistics.median(equilibra_s)
    return {
        "backend": "postgresql" if db_url else "sqlite",
        "rows": report.get("rows"),
        "accepted": report.get("accepted"),
        "duplicates": report.get("duplicates"),
        "rejected": report.get("rejected"),
        "equilibra_seconds": [round(s, 1) for s in equilibra_s],
        "equilibra_median_seconds": round(median, 1),
        "equilibra_median_rows_per_second": round(statistics.median(rates)),
        "equilibra_peak_rss_mib": round(max(peaks)),
        "peer_pandas_to_sql_seconds": [round(s, 1) for s in peer_s],
        "peer_median_seconds": round(statistics.median(peer_s), 1),
        "ratio_equilibra_over_peer": round(median / statistics.median(peer_s), 2),
    }


BUILD = """
import json, sys, time, resource
import numpy as np, pandas as pd, scipy.sparse as sp
from equilibra.data.cleaning import clean_events
from equilibra.data.interactions import SNAPSHOT_COLUMNS, Interactions
from equilibra.store import open_store
t0 = time.perf_counter()
with open_store(sys.argv[1]) as store:
    events = store.events_frame(columns=SNAPSHOT_COLUMNS)
t1 = time.perf_counter()
cleaned, report = clean_events(events)
t2 = time.perf_counter()
x = Interactions.from_frame(cleaned)
t3 = time.perf_counter()
# Peer: what a hand-rolled implicit + Flask stack does.
w = events["event_type"].map({"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}).to_numpy()
u, users = pd.factorize(events["user_id"]); i, items = pd.factorize(events["item_id"])
peer = sp.csr_matrix((w.astype(np.float32), (u, i)), shape=(len(users), len(items)))
peer.sum_duplicates()
t4 = time.perf_counter()
print(json.dumps({"read_seconds": t1 - t0, "clean_seconds": t2 - t1, "build_seconds": t3 - t2,
                  "peer_build_seconds": t4 - t3, "shape": list(x.shape), "nnz": x.nnz,
                  "memory_mib": x.memory_bytes() / 2**20,
                  "peer_memory_mib": (peer.data.nbytes + peer.indices.nbytes
                                      + peer.indptr.nbytes) / 2**20,
                  "removed_by_cleaning": report.events_in - report.events_out,
                  "bot_users": report.bot_users, "outlier_users": report.outlier_users,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_runs(db_url: str, runs: int) -> dict[str, object]:
    results = []
    for _ in range(runs):
        stdout, _, _ = run_child([sys.executable, "-c", BUILD, db_url])
        results.append(json.loads(stdout))
    med = {
        k: statistics.median(r[k] for r in results)
        for k in results[0]
        if isinstance(results[0][k], float)
    }
    last = results[-1]
    return {
        "shape": last["shape"],
        "nnz": last["nnz"],
        "memory_mib": round(last["memory_mib"], 1),
        "peer_memory_mib": round(last["peer_memory_mib"], 1),
        "removed_by_cleaning": last["removed_by_cleaning"],
        "bot_users": last["bot_users"],
        "outlier_users": last["outlier_users"],
        "median_read_seconds": round(med["read_seconds"], 2),
        "median_clean_seconds": round(med["clean_seconds"], 2),
        "median_build_seconds": round(med["build_seconds"], 2),
        "median_peer_build_seconds": round(med["peer_build_seconds"], 2),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in results)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/equilibra-bench"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", help="also import into this PostgreSQL URL")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    events = generate(args.work_dir)
    marginals = json.loads((args.work_dir / "marginals.json").read_text())
    results: dict[str, object] = {
        "marginals": {
            k: {"synthetic": marginals.get(k), "retailrocket": v} for k, v in RETAILROCKET.items()
        },
        "generate_seconds": marginals.get("generate_seconds"),
        "file_mib": round(events.stat().st_size / 2**20, 1),
        "import_sqlite": import_runs(events, args.work_dir, args.runs, None),
    }
    results["interactions"] = build_runs(f"sqlite:///{args.work_dir / 'import-0.db'}", args.runs)
    if args.postgres:
        results["import_postgresql"] = import_runs(events, args.work_dir, 1, args.postgres)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
