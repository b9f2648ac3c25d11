"""The main job on the embedded default, end to end, as `equilibra demo` runs it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from equilibra.analysis import analyse
from equilibra.analysis.report import headline, write_report
from equilibra.data.cleaning import clean_events
from equilibra.data.synthetic import generate_shop
from equilibra.data.synthetic import preset as get_preset
from equilibra.data.training import TrainingData, default_weights, snapshot
from equilibra.pipeline.train import load_store_data, train
from equilibra.store import open_store
from equilibra.store.ingest import import_files


def run_demo(
    workdir: Path,
    preset: str = "demo",
    seed: int = 42,
    console: Console | None = None,
    model_budget: float = 30.0,
) -> dict[str, Any]:
    """Generate a shop, import it into SQLite, build interactions, analyse, train; -> summary."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    workdir = Path(workdir)
    data_dir = workdir / "shop"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    db_path = workdir / "shop.db"
    for stale in workdir.glob("shop.db*"):
        stale.unlink()
    if (workdir / "model" / "equilibra.json").exists():  # an unversioned model of an older run
        shutil.rmtree(workdir / "model")

    console.print(f"[1/5] generating the '{preset}' shop (seed {seed})")
    shop = generate_shop(get_preset(preset, seed=seed))
    files = shop.write(data_dir)

    console.print(f"[2/5] importing into sqlite:///{db_path}")
    with open_store(f"sqlite:///{db_path}") as store:
        report = import_files(
            store,
            files["events"],
            "canonical",
            files["items"],
            files["users"],
            rejects_path=workdir / "rejects.csv",
        )
        console.print("[3/5] building interactions")
        events = store.events_frame()
        items = store.items_frame()
        stats = store.stats()
    cleaned, cleaning = clean_events(events)
    interactions = snapshot(cleaned, items, default_weights(TrainingData(events=cleaned)))

    console.print("[4/5] analysing behaviour")
    result = analyse(cleaned, items)
    paths = write_report(result, cleaned, workdir / "analysis", title=f"Demo shop ({preset})")
    summary: dict[str, Any] = {
        "database": f"sqlite:///{db_path}",
        "events imported": report.accepted,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "users": stats.users,
        "items": stats.items,
        "removed by cleaning": cleaning.events_in - cleaning.events_out,
        "interactions": repr(interactions),
        "interactions memory (MiB)": round(interactions.memory_bytes() / 2**20, 2),
    }
    summary.update(
        {
            k: v
            for k, v in headline(result).items()
            if k
            in (
                "view_to_cart",
                "cart_to_purchase",
                "share_items_under_5_events",
                "repeat_buyer_rate",
                "median_events_per_session",
            )
        }
    )
    summary["report"] = str(paths["html"])

    console.print(f"[5/5] choosing a model (auto, {model_budget:.0f} s budget) and training it")
    artifact = train(
        load_store_data(f"sqlite:///{db_path}"),
        "auto",
        budget=model_budget,
        note=console.print,
        info={"trained_on": f"sqlite:///{db_path}"},
    )
    version = artifact.publish(workdir / "model")
    auto = artifact.info["auto"]
    summary["model"] = auto["chosen"]
    scores = [s["ndcg@10"] for s in auto.get("validation", []) if "ndcg@10" in s]
    summary["validation ndcg@10"] = round(max(scores), 4) if scores else None
    summary["model directory"] = f"{workdir / 'model'} (version {version})"
    summary["example user"] = str(cleaned["user_id"].iloc[0]) if len(cleaned) else "u1"
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
