"""`equilibra …`: the batch command line (contracts in docs/design.md)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from equilibra.data.formats import FORMATS, ColumnMapping, read_events
from equilibra.domain import ValidationError, parse_timestamp
from equilibra.errors import EquilibraError

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
    from equilibra.ingest import import_files
    from equilibra.store import open_store

    if events is None and items is None and users is None:
        raise EquilibraError("events: give at least one of --events, --items, --users")
    _check_format(fmt)
    mapping = ColumnMapping.parse(map_, type_map, timestamp_unit, sep) if map_ else None
    if rejects is None and events is not None:
        rejects = Path(str(events.name).split(".")[0] + ".rejects.csv")
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


# --- analyse -----------------------------------------------------------------------------------


def load_events(
    db: str | None, events: Path | None, fmt: str, since: float | None, until: float | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """Events (and items, where known) from a store or straight from a file; -> rejects count."""
    from equilibra.data.validate import validate_events, validate_items

    if (db is None) == (events is None):
        raise EquilibraError("analyze: give exactly one of --db or --events")
    if db is not None:
        from equilibra.store import open_store

        with open_store(db) as store:
            frame = store.events_frame(since=since, until=until)
            items = store.items_frame()
        return frame, items, 0
    assert events is not None
    frames, item_frames, rejected = [], [], 0
    with _progress("reading") as update:
        for chunk in read_events(events, _check_format(fmt)):
            checked = validate_events(chunk.events, timestamp_unit=chunk.timestamp_unit)
            frames.append(checked.valid)
            rejected += len(checked.rejects)
            if chunk.items is not None:
                item_frames.append(validate_items(chunk.items).valid)
            update(chunk.done, chunk.total)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if since is not None:
        frame = frame[frame["timestamp"] >= since]
    if until is not None:
        frame = frame[frame["timestamp"] < until]
    items = pd.concat(item_frames).drop_duplicates("item_id") if item_frames else None
    return frame, items, rejected


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


# --- demo --------------------------------------------------------------------------------------


@app.command("demo")
def demo_command(
    workdir: Annotated[Path, typer.Option(help="where the shop, database and report go")] = Path(
        "demo-out"
    ),
    preset: Annotated[str, typer.Option()] = "demo",
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """The main job on the embedded default: synthetic shop → SQLite → interactions → analysis."""
    from equilibra.demo import run_demo

    summary = run_demo(workdir, preset, seed, console)
    table = Table(title="Equilibra demo", show_header=False)
    for key, value in summary.items():
        table.add_row(
            key,
            f"{value:,}"
            if isinstance(value, int)
            else f"{value:.4f}"
            if isinstance(value, float)
            else str(value),
        )
    out.print(table)


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
