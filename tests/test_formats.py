"""Each known format, from tiny fixtures written in its exact shape."""

import gzip
import json

import pandas as pd
import pytest

from equilibra.data.formats import ColumnMapping, read_events, read_items
from equilibra.data.validate import validate_events
from equilibra.errors import EquilibraError


def load(path, fmt, mapping=None):
    chunks = list(read_events(path, fmt, chunk_size=1000, mapping=mapping))
    checked = [validate_events(c.events, timestamp_unit=c.timestamp_unit) for c in chunks]
    valid = pd.concat([c.valid for c in checked], ignore_index=True)
    rejects = pd.concat([c.rejects for c in checked], ignore_index=True)
    return valid, rejects, chunks


def test_canonical_csv_gz_and_parquet(tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["a", "b"],
            "event_type": ["view", "purchase"],
            "timestamp": ["2026-01-01T10:00:00Z", "1767261600"],
        }
    )
    with gzip.open(tmp_path / "e.csv.gz", "wt") as handle:
        frame.to_csv(handle, index=False)
    frame.to_parquet(tmp_path / "e.parquet")
    for name in ("e.csv.gz", "e.parquet"):
        valid, rejects, _ = load(tmp_path / name, "canonical")
        assert len(valid) == 2 and rejects.empty
        assert valid["timestamp"].tolist() == [1767261600.0, 1767261600.0]


def test_canonical_requires_its_columns(tmp_path):
    (tmp_path / "e.csv").write_text("who,what\n1,2\n")
    with pytest.raises(EquilibraError, match="lacks column"):
        load(tmp_path / "e.csv", "canonical")


def test_movielens_three_flavours(tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    for name, n in (("u.data", 2), ("ratings.dat", 2), ("ratings.csv", 1)):
        valid, rejects, _ = load(tmp_path / name, "movielens")
        assert len(valid) == n and rejects.empty
        assert (valid["event_type"] == "rating").all()
    valid, _, _ = load(tmp_path / "ratings.dat", "movielens")
    assert valid[["user_id", "item_id", "value"]].values.tolist() == [
        ["1", "1193", 5.0],
        ["1", "661", 3.0],
    ]


def test_movielens_items(tmp_path):
    genres = "|".join(["0"] * 19)
    (tmp_path / "u.item").write_bytes(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{genres}\n".encode("latin-1")
    )
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story, The",Comedy|Drama\n')
    assert read_items(tmp_path / "u.item", "movielens")["title"].tolist() == ["Toy Story (1995)"]
    assert read_items(tmp_path / "movies.csv", "movielens")["categories"].tolist() == [
        "Comedy|Drama"
    ]


def test_taobao_maps_behaviours_and_yields_categories(tmp_path):
    (tmp_path / "ub.csv").write_text(
        "1,10,100,pv,1511544070\n1,10,100,cart,1511544080\n"
        "1,11,200,fav,1511544090\n1,11,200,buy,1511544095\n"
        "2,12,300,share,1511544095\n"
    )
    valid, rejects, chunks = load(tmp_path / "ub.csv", "taobao")
    assert valid["event_type"].tolist() == ["view", "add_to_cart", "favorite", "purchase"]
    assert "unknown type 'share'" in rejects["reason"].iloc[0]
    assert rejects["source_row"].iloc[0] == 5
    assert set(chunks[0].items["categories"]) == {"100", "200", "300"}


def test_retailrocket_milliseconds_and_transactions(tmp_path):
    (tmp_path / "events.csv").write_text(
        "timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n"
        "1433223236124,287857,addtocart,5206,\n1433224214164,992329,transaction,248676,4000\n"
    )
    valid, rejects, _ = load(tmp_path / "events.csv", "retailrocket")
    assert rejects.empty
    assert valid["event_type"].tolist() == ["view", "add_to_cart", "purchase"]
    assert valid["timestamp"].iloc[0] == pytest.approx(1433221332.117)
    assert json.loads(valid["context"].iloc[2]) == {"transaction_id": "4000"}


def test_rees46_rejects_remove_from_cart_with_reason(tmp_path):
    (tmp_path / "rees.csv").write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,a\n"
        "2019-10-01 00:00:01 UTC,cart,3900821,2053013552326770905,"
        "appliances.environment.water_heater,aqua,33.20,554748717,b\n"
        "2019-10-01 00:00:02 UTC,remove_from_cart,3900821,2053013552326770905,,aqua,33.20,"
        "554748717,b\n"
    )
    valid, rejects, chunks = load(tmp_path / "rees.csv", "rees46")
    assert valid["event_type"].tolist() == ["view", "add_to_cart"]
    assert valid["timestamp"].iloc[0] == 1569888000.0
    assert "remove_from_cart" in rejects["reason"].iloc[0]
    items = chunks[0].items.set_index("item_id")
    assert items.loc["3900821", "categories"] == "appliances|environment|water_heater"


def test_obd_rows_become_impressions_and_clicks(tmp_path):
    folder = tmp_path / "random" / "all"
    folder.mkdir(parents=True)
    (folder / "all.csv").write_text(
        ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1\n"
        "0,2019-11-24 00:00:34.762830+00:00,14,3,0,0.0125,aa,bb\n"
        "1,2019-11-24 00:00:53.965051+00:00,7,1,1,0.0125,aa,cc\n"
    )
    valid, rejects, chunks = load(folder / "all.csv", "obd")
    assert len(chunks[0].impressions) == 2 and rejects.empty
    assert valid["event_type"].tolist() == ["click"]
    assert valid["impression_id"].tolist() == ["obd-random-1"]
    assert chunks[0].impressions["policy"].tolist() == ["random", "random"]


def test_generic_mapping_with_type_names_and_ms(tmp_path):
    (tmp_path / "mine.tsv").write_text("who\tsku\taction\twhen\nv1\tS1\tbasket\t1767000000000\n")
    mapping = ColumnMapping.parse(
        "user_id=who,item_id=sku,event_type=action,timestamp=when", "basket=add_to_cart", "ms", "\t"
    )
    valid, _rejects, _ = load(tmp_path / "mine.tsv", "canonical", mapping)
    assert valid[["user_id", "item_id", "event_type"]].values.tolist() == [
        ["v1", "S1", "add_to_cart"]
    ]
    assert valid["timestamp"].iloc[0] == 1767000000.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("user_id=a", "must name a source column"),
        ("colour=b", "unknown canonical column"),
        ("user_id", "NAME=VALUE"),
    ],
)
def test_bad_mappings_are_explained(spec, message):
    with pytest.raises(EquilibraError, match=message):
        ColumnMapping.parse(spec)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(EquilibraError, match="unknown format"):
        read_events(tmp_path / "x.csv", "gorse")
    with pytest.raises(EquilibraError, match="does not exist"):
        list(read_events(tmp_path / "x.csv", "canonical"))
