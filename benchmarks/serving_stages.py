"""Where a recommend request's time goes: the pipeline's stages timed one by one, in-process.

    python benchmarks/serving_stages.py [--work-dir /tmp/equilibra-serving] [--requests 1000]
        [--repeats 3] [--out docs/service]

Uses the shop and model `benchmarks/serving.py` prepares (run it first), on a copy of the
prepared store. The stages are called in the order the route calls them, for the same requests
as the HTTP benchmark; each stage's median over the requests, then the median over the repeats.
HTTP parsing, validation and the thread hop are not in it: the HTTP benchmark's latency minus
this total is what the server stack adds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

STAGES = ("gather", "blend", "screen", "diversify", "shortlist", "to_candidates", "policy",
          "pins + log rows", "record", "respond")  # fmt: skip


def time_stages(work: Path, n_requests: int) -> dict[str, float]:
    from equilibra.rank.rules import pins
    from equilibra.service import pipeline
    from equilibra.service.engine import Engine
    from equilibra.service.settings import Settings

    db = work / "stages.db"
    for stale in ("stages.db-wal", "stages.db-shm"):
        (work / stale).unlink(missing_ok=True)
    shutil.copy(work / "shop.pristine.db", db)
    settings = Settings(db=f"sqlite:///{db}", model_dir=work / "model", policy="adaptive")
    engine = Engine(settings)
    engine.start()
    bodies = [
        json.loads(line)["body"] for line in (work / "recommend.jsonl").read_text().splitlines()
    ]
    spent: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    warm = 100
    for index, body in enumerate(bodies[: warm + n_requests]):
        clock = [time.perf_counter()]
        mark = clock.append
        req = pipeline.Request(user_id=body["user_id"], k=body["k"], placement=body["placement"],
                               timestamp=time.time())  # fmt: skip
        engine.advance(req.timestamp)
        model, rules = engine.model, list(engine.rules.values())
        user = engine.state.user(req.user_id)  # timed with gather, as the route reads it
        pool = pipeline.gather(req, model, engine.state, engine.catalog, settings.candidates, user)
        mark(time.perf_counter())
        blended = pipeline.blend(pool, engine.catalog, None)
        mark(time.perf_counter())
        screened = pipeline.screen(blended, req, model, user, engine.catalog, rules)
        mark(time.perf_counter())
        screened = pipeline.diversify(screened, engine.catalog, settings.diversity, 2 * req.k)
        mark(time.perf_counter())
        screened = pipeline.shortlist(screened, max(settings.shortlist, 2 * req.k))
        mark(time.perf_counter())
        candidates = pipeline.to_candidates(
            screened, req, engine.state, engine.base_rate, engine.segment_of(req.user_id, user)
        )
        mark(time.perf_counter())
        slate = engine.explore(candidates, req.k)
        mark(time.perf_counter())
        pinned = pins(rules, req.placement, req.timestamp, req.k)
        shown = pipeline.place_pins(slate, screened, pinned, req.k)
        impression = engine.new_impression_id()
        version = None if model is None else model.version
        rows = pipeline.log_rows(
            shown, slate, candidates, req, impression, engine.base_rate, version
        )
        mark(time.perf_counter())
        engine.record(impression, req.user_id, req.timestamp, slate, candidates, rows)
        mark(time.perf_counter())
        pipeline.respond(
            shown, impression, version, engine.policy.spec, engine.policy.exploration_rate
        )
        mark(time.perf_counter())
        if index >= warm:
            for name, start, end in zip(STAGES, clock[:-1], clock[1:], strict=True):
                spent[name].append(1000 * (end - start))
            spent["total"].append(1000 * (clock[-1] - clock[0]))
    engine.close()
    db.unlink(missing_ok=True)
    return {name: float(np.median(values)) for name, values in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/equilibra-serving"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/service"))
    args = parser.parse_args()
    runs = [time_stages(args.work_dir, args.requests) for _ in range(args.repeats)]
    medians = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    lines = [
        "# Where a recommend request's time goes (in-process, RetailRocket-sized shop)",
        "",
        f"Made by `python benchmarks/serving_stages.py --requests {args.requests} --repeats "
        f"{args.repeats}`: each stage's median over the requests, median of {args.repeats} runs.",
        "",
        "| stage | median ms |",
        "|---|---:|",
        *[f"| {name} | {medians[name]:.3f} |" for name in STAGES],
        f"| **total** (median of the per-request totals) | **{medians['total']:.3f}** |",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving_stages.json").write_text(json.dumps({"runs": runs}, indent=1))
    (args.out / "serving_stages.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
