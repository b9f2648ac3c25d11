"""The impression log each policy writes, checked as a user would check it.

    python benchmarks/impression_logs.py [--requests 3000] [--out docs/exploration]

Runs `equilibra simulate --scenario stationary --policy SPEC --requests N --log F` (synthetic
shop, 10 of 100 candidates per request) for every policy, then reads each log back: positions,
the propensity range, how many rows carry a Monte-Carlo error and its median, and whether
`equilibra ope` reads the log back whole. Writes `impression_logs.md` and `impression_logs.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

POLICIES = (
    "greedy",
    "egreedy:0.1",
    "ucb:1",
    "gorse:0.1,0.1",
    "linucb:0.1",
    "uniform",
    "thompson",
    "thompson:draw=exact",
    "softmax:0.2",
    "lints:0.05",
)


def check(spec: str, requests: int, folder: Path) -> dict[str, object]:
    log = folder / f"{spec.replace(':', '_').replace(',', '_')}.csv"
    command = [
        sys.executable, "-m", "equilibra.cli", "simulate", "--scenario", "stationary",
        "--policy", spec, "--requests", str(requests), "--log", str(log),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    frame = pd.read_csv(log)
    errors = frame["propensity_error"]
    ope = subprocess.run(
        [sys.executable, "-m", "equilibra.cli", "ope", "--logs", str(log), "--format",
         "equilibra", "--policy", "uniform", "--n-boot", "50"],
        capture_output=True, text=True,
    )  # fmt: skip
    read = json.loads(ope.stdout) if ope.returncode == 0 else None
    return {
        "policy": spec,
        "rows": len(frame),
        "min_position": int(frame["position"].min()),
        "max_position": int(frame["position"].max()),
        "min_propensity": float(frame["propensity"].min()),
        "max_propensity": float(frame["propensity"].max()),
        "rows_with_zero_propensity": int((frame["propensity"] <= 0).sum()),
        "share_with_error": float((errors > 0).mean()),
        "median_error": float(errors[errors > 0].median()) if (errors > 0).any() else 0.0,
        "median_relative_error": float((errors / frame["propensity"])[errors > 0].median())
        if (errors > 0).any()
        else 0.0,
        "open_rewards": int(frame["reward"].isna().sum()),
        "ope_rounds": None if read is None else read["rounds"],
        "ope_skipped": None if read is None else read["skipped"],
        "ope_exit": ope.returncode,
    }


def markdown(rows: list[dict[str, object]], command: str) -> str:
    lines = [
        "# Impression logs of every policy",
        "",
        f"Made by `{command}`.",
        "",
        "| policy | rows | positions | propensity min–max | rows at 0 | rows with MC error |"
        " median error | median relative error | read back by `equilibra ope` |",
        "|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["ope_rounds"] is None:
            cell = f"error (exit {r['ope_exit']})"
        else:
            left_out = sum(r["ope_skipped"].values())  # type: ignore[union-attr]
            cell = f"{r['ope_rounds']:,} rounds, {left_out} impressions left out"
        share = 100 * float(r["share_with_error"])  # type: ignore[arg-type]
        lines.append(
            f"| {r['policy']} | {r['rows']:,} | {r['min_position']}–{r['max_position']} | "
            f"{r['min_propensity']:.2e}–{r['max_propensity']:.3f} | "
            f"{r['rows_with_zero_propensity']} | {share:.1f} % | {r['median_error']:.4f} | "
            f"{r['median_relative_error']:.3f} | {cell} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("docs/exploration"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in POLICIES:
            rows.append(check(spec, args.requests, Path(tmp)))
            print(rows[-1], file=sys.stderr)
    command = "python benchmarks/impression_logs.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "impression_logs.json").write_text(json.dumps(rows, indent=1))
    report = markdown(rows, command.strip())
    (args.out / "impression_logs.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
