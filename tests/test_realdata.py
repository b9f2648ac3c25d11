"""Import each real dataset in ../shared/datasets (skipped where it is not present)."""

import pytest
from conftest import dataset

from equilibra.store import open_store
from equilibra.store.ingest import import_files

pytestmark = pytest.mark.realdata

CASES = [
    (("ml-100k", "u.data"), "movielens", ("ml-100k", "u.item"), 100_000, 1_682),
    (
        ("ml-latest-small", "ratings.csv"),
        "movielens",
        ("ml-latest-small", "movies.csv"),
        100_004,
        9_125,
    ),
    (("taobao-userbehavior-sample", "UserBehavior.csv.gz"), "taobao", None, 84_287, 55_233),
    (
        ("obd", "random", "all", "all.csv"),
        "obd",
        ("obd", "random", "all", "item_context.csv"),
        38,
        80,
    ),
]


@pytest.mark.parametrize(("events", "fmt", "items", "n_events", "n_items"), CASES)
def test_real_dataset_imports_completely(tmp_path, events, fmt, items, n_events, n_items):
    with open_store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        report = import_files(
            store, dataset(*events), fmt, items=dataset(*items) if items else None
        )
        assert (report.accepted, report.rejected, report.duplicates) == (n_events, 0, 0)
        assert report.items == n_items
        if fmt == "obd":
            assert report.impressions == 10_000
