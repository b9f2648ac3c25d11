"""The real datasets in ../shared/datasets, by name: where each file lies and how to read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from equilibra.data.columns import Columns as C
from equilibra.data.training import TrainingData, load_training_data
from equilibra.errors import EquilibraError


@dataclass(frozen=True)
class RealDataset:
    events: str
    format: str
    items: str | None = None
    # Rows before this Unix time are dropped (stray rows outside the documented span).
    since: float | None = None


REAL_DATASETS: dict[str, RealDataset] = {
    "ml-100k": RealDataset("ml-100k/u.data", "movielens", "ml-100k/u.item"),
    "ml-latest-small": RealDataset(
        "ml-latest-small/ratings.csv", "movielens", "ml-latest-small/movies.csv"
    ),
    # The 35 stray rows before the nine Beijing-time days are dropped (dataset README).
    "taobao": RealDataset(
        "taobao-userbehavior-sample/UserBehavior.csv.gz", "taobao", since=1511539200.0
    ),
}


def load_real(data_dir: Path, name: str) -> TrainingData:
    if name not in REAL_DATASETS:
        raise EquilibraError(
            f"dataset: unknown {name!r}; expected one of {', '.join(REAL_DATASETS)}"
        )
    spec = REAL_DATASETS[name]
    path = data_dir / spec.events
    if not path.exists():
        raise EquilibraError(f"--data-dir: {path} not found")
    data = load_training_data(path, spec.format, data_dir / spec.items if spec.items else None)
    if spec.since is not None:
        data.events = data.events[data.events[C.timestamp] >= spec.since]
    return data
