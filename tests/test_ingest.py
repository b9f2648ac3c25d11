import pandas as pd

from equilibra.store.ingest import import_files, import_frames


def test_import_accounts_for_every_row_and_writes_rejects(store, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,event_type,timestamp\n"
        "u1,i1,view,1767000000\nu1,i1,view,1767000000\n"
        ",i2,view,1767000000\nu2,i2,teleport,1767000000\nu3,i3,purchase,soon\n"
    )
    rejects = tmp_path / "rejects.csv"
    report = import_files(store, events, rejects_path=rejects, chunk_size=2)
    assert (report.rows, report.accepted, report.duplicates, report.rejected) == (5, 1, 1, 3)
    written = pd.read_csv(rejects)
    assert written["source_row"].tolist() == [4, 5, 6]
    assert written["reason"].str.split(":").str[0].tolist() == [
        "user_id",
        "event_type",
        "timestamp",
    ]
    again = import_files(store, events, chunk_size=2)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 2, 3)


def test_import_frames_from_the_synthetic_shop(store, tiny_shop):
    report = import_frames(store, tiny_shop.events, tiny_shop.items, tiny_shop.users)
    assert report.accepted == len(tiny_shop) and report.rejected == 0
    stats = store.stats()
    assert stats.events == len(tiny_shop) and stats.items == len(tiny_shop.items)
    assert stats.users == len(tiny_shop.users)
