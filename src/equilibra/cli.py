"""`equilibra …`: the batch command line (contracts in docs/design.md)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from equilibra.data.formats import FORMATS, ColumnMapping
from equilibra.domain import ValidationError, parse_timestamp
from equilibra.errors import EquilibraError

if TYPE_CHECKING:
    from equilibra.pipeline.artifact import ModelArtifact

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Equilibra: recommendations for online shops that balance exploration and exploitation.",
)
console = Console(stderr=True, soft_wrap=True)
out = Console()

DbOption = Annotated[str, typer.Option("--db", help="sqlite:///FILE.db or postgresql://…")]


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("EQUILIBRA_PROGRESS") != "1",
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield update


def _time_option(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value, name)
    except ValidationError as exc:
        raise EquilibraError(str(exc)) from None


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise EquilibraError(
            f"format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    return fmt


def _print_json(data: object) -> None:
    out.print_json(json.dumps(data, default=str))


# --- import ------------------------------------------------------------------------------------


@app.command("import")
def import_command(
    db: DbOption,
    events: Annotated[Path | None, typer.Option(help="events file (CSV, CSV.gz, Parquet)")] = None,
    items: Annotated[Path | None, typer.Option(help="item file")] = None,
    users: Annotated[Path | None, typer.Option(help="user file")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help=f"one of {', '.join(FORMATS)}")
    ] = "canonical",
    map_: Annotated[
        str | None,
        typer.Option(
            "--map", help="generic mapping: user_id=COL,item_id=COL,event_type=COL,timestamp=COL"
        ),
    ] = None,
    type_map: Annotated[str, typer.Option(help="event names: addtocart=add_to_cart,…")] = "",
    timestamp_unit: Annotated[
        str, typer.Option(help="unit of numeric timestamps with --map")
    ] = "s",
    sep: Annotated[str, typer.Option(help="field separator with --map")] = ",",
    rejects: Annotated[
        Path | None, typer.Option(help="where rejected rows go (default: next to the events file)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1000)] = 250_000,
) -> None:
    """Import events, items and users; prints accepted / duplicate / rejected counts."""
    from equilibra.store import open_store
    from equilibra.store.ingest import import_files

    if events is None and items is None and users is None:
        raise EquilibraError("events: give at least one of --events, --items, --users")
    _check_format(fmt)
    mapping = ColumnMapping.parse(map_, type_map, timestamp_unit, sep) if map_ else None
    if rejects is None and events is not None:
        rejects = default_rejects_path(events)
    with open_store(db) as store, _progress("importing") as update:
        report = import_files(
            store, events, fmt, items, users, mapping, rejects, chunk_size, progress=update
        )
    _print_json(report.as_dict())
    console.print(
        f"accepted {report.accepted:,} · duplicates {report.duplicates:,} · "
        f"rejected {report.rejected:,} in {report.seconds:.1f}s "
        f"({report.rows_per_second:,.0f} rows/s)"
        + (f" · rejects in {report.rejects_file}" if report.rejects_file else "")
    )


DATA_SUFFIXES = (".csv.gz", ".tsv.gz", ".csv", ".tsv", ".parquet", ".gz", ".dat", ".data", ".txt")


def default_rejects_path(events: Path) -> Path:
    """`sub/shop.v2.csv` -> `sub/shop.v2.rejects.csv`: beside the events, named after them."""
    name = events.name
    for suffix in DATA_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return events.with_name(f"{name}.rejects.csv")


# --- analyse -----------------------------------------------------------------------------------


def load_events(
    db: str | None, events: Path | None, fmt: str, since: float | None, until: float | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """Events (and items, where known) from a store or straight from a file; -> rejects count."""
    if (db is None) == (events is None):
        raise EquilibraError("analyze: give exactly one of --db or --events")
    if db is not None:
        from equilibra.store import open_store

        with open_store(db) as store:
            frame = store.events_frame(since=since, until=until)
            items = store.items_frame()
        return frame, items, 0
    from equilibra.data.training import load_training_data

    assert events is not None
    with _progress("reading") as update:
        data = load_training_data(events, _check_format(fmt), progress=update)
    frame = data.events
    if since is not None:
        frame = frame[frame["timestamp"] >= since]
    if until is not None:
        frame = frame[frame["timestamp"] < until]
    return frame, data.items, data.rejected


@app.command("analyze")
def analyze_command(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for JSON, PNG and HTML")],
    db: Annotated[str | None, typer.Option(help="sqlite:///FILE.db or postgresql://…")] = None,
    events: Annotated[Path | None, typer.Option(help="events file, instead of --db")] = None,
    fmt: Annotated[str, typer.Option("--format")] = "canonical",
    since: Annotated[
        str | None, typer.Option(help="only events at or after (ISO or Unix s)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="only events before (ISO or Unix s)")] = None,
) -> None:
    """Funnel, activity, long tail, repeat purchases, sessions and categories: JSON + report."""
    from equilibra.analysis import analyse
    from equilibra.analysis.report import headline, write_report

    frame, items, rejected = load_events(
        db, events, fmt, _time_option(since, "since"), _time_option(until, "until")
    )
    if frame.empty:
        raise EquilibraError("events: nothing to analyse (no valid events in the window)")
    result = analyse(frame, items)
    result["rejected_rows"] = rejected
    paths = write_report(result, frame, out_dir)
    _print_json(headline(result))
    console.print(f"report: {paths['html']} · numbers: {paths['json']}")


# --- generate ----------------------------------------------------------------------------------


@app.command("generate")
def generate_command(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the files")],
    preset: Annotated[str, typer.Option(help="tiny, demo or retailrocket")] = "demo",
    seed: Annotated[int, typer.Option()] = 42,
    fmt: Annotated[str, typer.Option("--format", help="canonical or retailrocket")] = "canonical",
    gzip: Annotated[bool, typer.Option("--gzip/--no-gzip")] = False,
) -> None:
    """Generate a synthetic shop (catalogue, users, events) from a preset."""
    from equilibra.data.synthetic import generate_shop
    from equilibra.data.synthetic import preset as get_preset

    config = get_preset(preset, seed=seed)
    if fmt not in ("canonical", "retailrocket"):
        raise EquilibraError("format: the generator writes canonical or retailrocket")
    started = time.perf_counter()
    shop = generate_shop(config)
    paths = shop.write(out_dir, fmt=fmt, compress=gzip)
    marginals = shop_marginals(shop)
    _print_json(
        {
            "preset": preset,
            "seed": seed,
            "seconds": round(time.perf_counter() - started, 1),
            "files": {k: str(v) for k, v in paths.items()},
            "marginals": marginals,
        }
    )


def shop_marginals(shop: Any) -> dict[str, Any]:
    import numpy as np

    kinds = pd.Series(shop.event_type).value_counts()
    return {
        "events": len(shop),
        "visitors": len(np.unique(shop.user_index)),
        "items": len(np.unique(shop.item_index)),
        **{str(k): int(v) for k, v in kinds.items()},
        "days": round(float(shop.timestamp.max() - shop.timestamp.min()) / 86_400, 1),
    }


# --- store utilities ---------------------------------------------------------------------------


@app.command("stats")
def stats_command(db: DbOption) -> None:
    """Counts of events, users, items and impressions in a store."""
    from equilibra.store import open_store

    with open_store(db) as store:
        _print_json(store.stats().__dict__)


@app.command("forget")
def forget_command(db: DbOption, user: Annotated[str, typer.Option(help="user id")]) -> None:
    """Delete everything stored about one user."""
    from equilibra.store import open_store

    with open_store(db) as store:
        _print_json(store.forget_user(user).__dict__)


@app.command("interactions")
def interactions_command(
    db: DbOption,
    weights: Annotated[str, typer.Option(help="e.g. view=1,add_to_cart=4,purchase=8")] = "",
    half_life_days: Annotated[float | None, typer.Option(help="time decay")] = None,
    min_user_events: Annotated[int, typer.Option()] = 1,
    min_item_events: Annotated[int, typer.Option()] = 1,
) -> None:
    """Build the user × item matrix from a store (after cleaning) and report its size."""
    from dataclasses import replace

    from equilibra.data.cleaning import CleaningConfig, clean_events
    from equilibra.data.interactions import SNAPSHOT_COLUMNS, EventWeights, Interactions
    from equilibra.store import open_store

    event_weights = EventWeights.parse(weights) if weights else EventWeights()
    if half_life_days is not None:
        event_weights = replace(event_weights, half_life_days=half_life_days)
    started = time.perf_counter()
    with open_store(db) as store:
        frame = store.events_frame(columns=SNAPSHOT_COLUMNS)
    read = time.perf_counter() - started
    cleaned, report = clean_events(
        frame, CleaningConfig(min_user_events=min_user_events, min_item_events=min_item_events)
    )
    built_at = time.perf_counter()
    matrix = Interactions.from_frame(cleaned, event_weights)
    build = time.perf_counter() - built_at
    _print_json(
        {
            "users": matrix.shape[0],
            "items": matrix.shape[1],
            "nnz": matrix.nnz,
            "events": matrix.n_events,
            "memory_mib": round(matrix.memory_bytes() / 2**20, 1),
            "read_seconds": round(read, 2),
            "build_seconds": round(build, 2),
            "cleaning": report.as_dict(),
        }
    )


# --- models ------------------------------------------------------------------------------------


def _params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EquilibraError(f"params: not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise EquilibraError("params: expected a JSON object, e.g. '{\"factors\": 64}'")
    return value


def _algorithm(name: str) -> str:
    from equilibra.pipeline.registry import MODELS

    if name != "auto" and name not in MODELS:
        raise EquilibraError(
            f"algorithm: unknown {name!r}; expected auto or one of {', '.join(MODELS)}"
        )
    return name


@app.command("fit")
def fit_command(
    out_dir: Annotated[Path, typer.Option("--out", help="model folder (versions are kept)")],
    events: Annotated[
        Path | None, typer.Option(help="training events (CSV, CSV.gz, Parquet)")
    ] = None,
    db: Annotated[str | None, typer.Option(help="train from this store instead")] = None,
    algorithm: Annotated[str, typer.Option(help="auto or a model name")] = "auto",
    items: Annotated[Path | None, typer.Option(help="item file")] = None,
    users: Annotated[Path | None, typer.Option(help="user file")] = None,
    fmt: Annotated[str, typer.Option("--format")] = "canonical",
    params: Annotated[str | None, typer.Option(help="model parameters as JSON")] = None,
    budget: Annotated[float, typer.Option(help="seconds for --algorithm auto's search")] = 300.0,
    keep: Annotated[int, typer.Option(min=1, help="model versions kept for rollback")] = 5,
    engine: Annotated[
        str, typer.Option(help="local, or spark (als, itemknn; needs the spark extra)")
    ] = "local",
    master: Annotated[
        str, typer.Option(help="Spark master URL for --engine spark: local[2], spark://…")
    ] = "local[*]",
) -> None:
    """Fit a model (or pick the best with --algorithm auto) and publish it as the next version."""
    from equilibra.pipeline.train import load_store_data, train

    _algorithm(algorithm)
    if (events is None) == (db is None):
        raise EquilibraError("fit: give exactly one of --events FILE or --db URL")
    if db is not None and (items is not None or users is not None):
        raise EquilibraError("fit: --items and --users go with --events; a store has its own")
    if engine not in ("local", "spark"):
        raise EquilibraError(f"engine: expected local or spark, not {engine!r}")
    started = time.perf_counter()
    if engine == "spark":
        artifact = _fit_on_spark(events, db, algorithm, items, users, fmt, params, master)
        version = artifact.publish(out_dir, keep=keep)
        data_summary = {k: v for k, v in artifact.info["data"].items() if k != "cleaning"}
        _print_json(
            {
                "model": str(out_dir),
                "model_version": version,
                "algorithm": artifact.model.name,
                "params": artifact.model.get_params(),
                **data_summary,
                "engine": artifact.info["engine"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        return
    if db is not None:
        data = load_store_data(db)
        source = db
    else:
        from equilibra.data.training import load_training_data

        assert events is not None
        data = load_training_data(events, _check_format(fmt), items, users)
        source = str(events)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("searching" if algorithm == "auto" else "fitting", total=None)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label[:60])

        artifact = train(
            data,
            algorithm,
            _params(params),
            budget,
            update,
            note=lambda message: console.print(f"[yellow]{message}[/yellow]"),
            info={"trained_on": source},
        )
    version = artifact.publish(out_dir, keep=keep)
    summary = {
        "model": str(out_dir),
        "model_version": version,
        "algorithm": artifact.model.name,
        "params": artifact.model.get_params(),
        **artifact.info["data"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    auto = artifact.info.get("auto")
    if auto is not None:
        summary["auto"] = auto.get("chosen")
        if "fallback" in auto:
            summary["fallback"] = auto["fallback"]
        summary["validation_ndcg@10"] = max(
            (s["ndcg@10"] for s in auto.get("validation", []) if "ndcg@10" in s), default=None
        )
    _print_json(summary)


def _fit_on_spark(
    events: Path | None,
    db: str | None,
    algorithm: str,
    items: Path | None,
    users: Path | None,
    fmt: str,
    params: str | None,
    master: str,
) -> ModelArtifact:
    from equilibra.pipeline.spark.train import train_on_spark

    if _check_format(fmt) != "canonical":
        raise EquilibraError("format: --engine spark reads canonical events (Parquet or CSV)")
    with console.status("Spark", spinner="dots") as status:
        return train_on_spark(
            algorithm,
            events=events,
            db=db,
            items=items,
            users=users,
            params=_params(params),
            master=master,
            step=lambda label: status.update(f"Spark: {label}"),
            info={"trained_on": db or str(events)},
        )


@app.command("rollback")
def rollback_command(
    model: Annotated[Path, typer.Option(help="model folder written by fit")],
    version: Annotated[
        int | None, typer.Option(help="version to make current (default: the one before)")
    ] = None,
) -> None:
    """Make an older model version current again (the versions fit kept)."""
    from equilibra.pipeline.artifact import current, rollback, versions

    before = current(model)
    now = rollback(model, version)
    _print_json({"model": str(model), "was": before, "model_version": now, "kept": versions(model)})


def _read_user_list(path: Path) -> pd.Series:
    if not path.exists():
        raise EquilibraError(f"users: file {path} does not exist")
    frame = pd.read_csv(path, dtype=str, header=None, keep_default_na=False)
    if frame.empty:
        raise EquilibraError(f"users: {path} is empty")
    first = frame.iloc[0, 0].strip().lower()
    if first in ("user_id", "userid", "user"):
        frame = frame.iloc[1:]
    ids = frame.iloc[:, 0].str.strip()
    if (ids == "").any():
        raise EquilibraError(
            f"users: {path} has an empty user id on line "
            f"{int((ids == '').to_numpy().argmax()) + 1 + (first == 'user_id')}"
        )
    return ids.drop_duplicates()


@app.command("recommend")
def recommend_command(
    model: Annotated[Path, typer.Option(help="model directory written by fit")],
    users: Annotated[Path, typer.Option(help="user ids, one per line (header user_id optional)")],
    out_file: Annotated[Path, typer.Option("--out", help="CSV: user_id,rank,item_id,score")],
    k: Annotated[int, typer.Option(min=1, max=10_000)] = 10,
    exclude: Annotated[str, typer.Option(help="interacted, converted or none")] = "interacted",
    context: Annotated[
        str | None,
        typer.Option(
            help='JSON context for users the model does not know, e.g. {"category": "Shoes"}'
        ),
    ] = None,
) -> None:
    """Top-K recommendations for a list of users, as CSV."""
    from equilibra.pipeline.artifact import EXCLUDE_CHOICES, ModelArtifact

    if exclude not in EXCLUDE_CHOICES:
        raise EquilibraError(f"exclude: expected one of {', '.join(EXCLUDE_CHOICES)}")
    artifact = ModelArtifact.load(model)
    ids = _read_user_list(users)
    started = time.perf_counter()
    table = artifact.recommend(ids, k, exclude, context=_params(context) if context else None)
    seconds = time.perf_counter() - started
    out_file.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_file, index=False)
    cold = int((~pd.Series(ids).isin(set(artifact.users.ids))).sum())
    _print_json(
        {
            "model_version": artifact.model_version,
            "users": len(ids),
            "cold_users": cold,
            "rows": len(table),
            "seconds": round(seconds, 3),
            "out": str(out_file),
        }
    )


@app.command("evaluate")
def evaluate_command(
    events: Annotated[Path, typer.Option(help="events to split by time")],
    algorithm: Annotated[str, typer.Option(help="auto or a model name")] = "auto",
    items: Annotated[Path | None, typer.Option(help="item file")] = None,
    fmt: Annotated[str, typer.Option("--format")] = "canonical",
    params: Annotated[str | None, typer.Option(help="model parameters as JSON")] = None,
    exclude: Annotated[str | None, typer.Option(help="default: by the data's protocol")] = None,
    budget: Annotated[float, typer.Option(help="seconds for auto's search")] = 120.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
) -> None:
    """Temporal split (design.md protocol), fit on the past, score the future; table + JSON."""
    from equilibra.data.training import load_training_data
    from equilibra.pipeline.evaluation import evaluate_split

    _algorithm(algorithm)
    data = load_training_data(events, _check_format(fmt), items)
    try:
        report = evaluate_split(data, algorithm, _params(params), exclude, budget)
    except ValueError as exc:
        raise EquilibraError(str(exc)) from None
    title = f"{report['algorithm']} on {events.name} ({report['split']} split"
    table = Table(title=f"{title}, exclude {report['exclude']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    for group in ("cold", "ratings"):
        for key, value in report.get(group, {}).items():
            if isinstance(value, float):
                table.add_row(f"{group} {key}", f"{value:.4f}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2, default=str))
    _print_json(report)


# --- exploration: off-policy evaluation and simulation ------------------------------------------


@app.command("ope")
def ope_command(
    policy: Annotated[str, typer.Option(help="policy spec, `uniform` or `logged`")],
    logs: Annotated[
        Path | None, typer.Option(help="impression log (OBD all.csv or Equilibra CSV)")
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="read the impression log from this store instead")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="obd or equilibra")] = "obd",
    since: Annotated[str | None, typer.Option(help="impressions at or after (with --db)")] = None,
    until: Annotated[str | None, typer.Option(help="impressions before (with --db)")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the intervals")] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
) -> None:
    """What POLICY would have earned per shown slot on logged impressions (IPS, SNIPS, DM, DR)."""
    from equilibra.evaluate.bandit_logs import READERS, evaluate_on_log, read_store

    if fmt not in READERS:
        raise EquilibraError(f"format: expected one of {', '.join(READERS)}, got {fmt!r}")
    if (logs is None) == (db is None):
        raise EquilibraError("ope: give exactly one of --logs FILE or --db URL")
    if n_boot < 10:
        raise EquilibraError("--n-boot: at least 10 resamples")
    if db is not None:
        if fmt != "equilibra":
            raise EquilibraError(
                "--db: a store holds Equilibra's impression log (--format equilibra)"
            )
        log = read_store(db, _time_option(since, "since"), _time_option(until, "until"))
        source = db
    else:
        assert logs is not None
        if not logs.exists():
            raise EquilibraError(f"--logs {logs}: no such file")
        log = READERS[fmt](logs)
        source = logs.name
    report = evaluate_on_log(log, policy, n_boot=n_boot, seed=seed).as_dict()
    table = Table(title=f"{report['policy']} on {source} ({report['rounds']:,} rounds)")
    for column in ("estimator", "value", "95 % interval"):
        table.add_column(column, justify="right" if column != "estimator" else "left")
    for name, estimate in report["estimates"].items():  # type: ignore[union-attr]
        low, high = estimate["ci"]
        table.add_row(name, f"{estimate['value']:.5f}", f"[{low:.5f}, {high:.5f}]")
    console.print(table)
    skipped = {k: v for k, v in report["skipped"].items() if v}  # type: ignore[union-attr]
    if skipped:
        console.print(
            "left out: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in skipped.items())
        )
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
    _print_json(report)


@app.command("simulate")
def simulate_command(
    scenario: Annotated[str, typer.Option(help="stationary, drift, new_items, …")] = "stationary",
    policy: Annotated[
        list[str] | None, typer.Option(help="policy spec (repeat to compare on one world)")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="ml-100k, ml-latest-small, taobao, or synthetic")
    ] = "synthetic",
    data_dir: Annotated[Path, typer.Option(help="where the real datasets lie")] = Path(
        "../shared/datasets"
    ),
    requests: Annotated[int, typer.Option(help="requests to simulate")] = 50_000,
    slate_size: Annotated[int, typer.Option(help="items per slate")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    plots: Annotated[Path | None, typer.Option(help="write PNG plots into this folder")] = None,
    log: Annotated[
        Path | None, typer.Option(help="write the impression log (CSV) of the first policy")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
) -> None:
    """Run policies through a scenario of users grounded on real data; reward, regret, plots."""
    from equilibra.data.datasets import load_real
    from equilibra.data.synthetic import generate_shop
    from equilibra.evaluate.bandit_logs import write_impressions
    from equilibra.evaluate.simulate import SimConfig, Simulator, World
    from equilibra.explore import parse_policy

    policies = [parse_policy(spec) for spec in (policy or ["egreedy:0.1"])]
    config = SimConfig(
        scenario=scenario,
        requests=requests,
        slate_size=slate_size,
        seed=seed,
        log_impressions=log is not None,
    )
    if dataset == "synthetic":
        events = generate_shop("demo", seed=seed).events
    else:
        events = load_real(data_dir, dataset).events
    world = World.build(events, config)
    simulator = Simulator(world, config)
    results = []
    for i, chosen in enumerate(policies):
        result = simulator.run(chosen, log_propensities=log is not None and i == 0)
        if log is not None and i == 0:
            write_impressions(result.impressions, log)
        results.append(result)
    table = Table(title=f"{scenario} on {dataset}: {requests:,} requests, seed {seed}")
    columns = ("reward_per_request", "regret_share", "explore_share", "coverage", "seconds")
    table.add_column("policy")
    for column in columns:
        table.add_column(column, justify="right")
    for result in results:
        table.add_row(result.policy, *(f"{result.summary[c] or 0:.4f}" for c in columns))
    console.print(table)
    report: dict[str, Any] = {
        "scenario": scenario,
        "dataset": dataset,
        "runs": [r.as_dict() for r in results],
    }
    if plots is not None:
        from equilibra.evaluate.sim_report import plot_runs

        report["plots"] = [str(p) for p in plot_runs(results, plots, f"{scenario} · {dataset}")]
    if json_out:
        json_out.write_text(json.dumps(report, indent=2, default=float))
    _print_json({**report, "runs": [{**r, "curve": "…"} for r in report["runs"]]})


# --- serve -----------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with the settings (the environment wins)")
    ] = None,
    db: Annotated[str | None, typer.Option(help="overrides EQUILIBRA_DB")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="overrides EQUILIBRA_MODEL_DIR")] = None,
    policy: Annotated[str | None, typer.Option(help="overrides EQUILIBRA_POLICY")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """The HTTP service (API v1, OpenAPI at /docs), configured by EQUILIBRA_* variables."""
    from equilibra.service.serve import run

    run(host, port, config, log_level, db=db, model_dir=model_dir, policy=policy)


# --- demo --------------------------------------------------------------------------------------


@app.command("demo")
def demo_command(
    workdir: Annotated[Path, typer.Option(help="where the shop, database and report go")] = Path(
        "demo-out"
    ),
    preset: Annotated[str, typer.Option()] = "demo",
    seed: Annotated[int, typer.Option()] = 42,
    model_budget: Annotated[float, typer.Option(help="seconds for choosing a model")] = 30.0,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="end by serving the shop over HTTP")
    ] = True,
    host: Annotated[str, typer.Option(help="where the service listens")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """The main job on the embedded default: shop → SQLite → analysis → model → service."""
    import secrets

    from equilibra.demo import run_demo

    summary = run_demo(workdir, preset, seed, console, model_budget)
    table = Table(title="Equilibra demo", show_header=False)
    for key, value in summary.items():
        table.add_row(key, _fmt_value(value))
    out.print(table)
    if not serve:
        return
    from equilibra.service.serve import run

    admin, read = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    user = summary.get("example user", "u1")
    out.print(
        f"\nServing the demo shop on http://{host}:{port} (OpenAPI at /docs; Ctrl-C stops it).\n"
        f"Admin key {admin} · read key {read}\n"
        f"Dashboard: http://{host}:{port}/ (sign in with the read key)\n\n"
        f"curl -s -H 'Authorization: Bearer {read}' -H 'Content-Type: application/json' \\\n"
        f'     -d \'{{"user_id": "{user}", "k": 5}}\' http://{host}:{port}/v1/recommend\n',
        soft_wrap=True,
    )
    run(
        host,
        port,
        None,
        "warning",
        db=f"sqlite:///{workdir / 'shop.db'}",
        model_dir=workdir / "model",
        admin_key=admin,
        read_key=read,
    )


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"


def _one_line(message: str) -> None:
    # Plain stderr, not rich: rich would wrap a long message onto a second line.
    print(" ".join(message.split()), file=sys.stderr)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        result = app(standalone_mode=False)
    except (
        EquilibraError,
        ValidationError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
    ) as exc:
        _one_line(f"error: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        _one_line("aborted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors come from click (or typer's copy of it): duck-typed so either works.
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2:
            _one_line(f"error: {exc.format_message()}")
            sys.exit(2)
        if type(exc).__name__ == "Abort":
            _one_line("aborted")
            sys.exit(130)
        if os.environ.get("EQUILIBRA_DEBUG"):
            raise
        _one_line(
            f"internal error: {type(exc).__name__}: {exc} (set EQUILIBRA_DEBUG=1 for the traceback)"
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
