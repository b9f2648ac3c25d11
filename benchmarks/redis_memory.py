"""Redis memory per million users of online state (issue: beyond one machine).

    python benchmarks/redis_memory.py [--work-dir /tmp/equilibra-serving] [--users N]
        [--out docs/scale]

Learns the synthetic `retailrocket` preset's events (the shop `benchmarks/serving.py`
prepares; generated here if missing), in time order, into a `RedisState` on a fresh
`redis-server` of its own (no persistence), then reads Redis's own `used_memory` and the size of
each kind of key. `--users N` keeps only the first N users' events (a quicker run). The
reference is Metarank's published figure, 0.8 GiB per million users.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.progress import Progress

GIB = 2**30
METARANK_GIB_PER_MILLION = 0.8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events_of(work: Path, users: int | None) -> pd.DataFrame:
    path = work / "shop" / "events.csv"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "equilibra.cli", "generate", "--preset",
                        "retailrocket", "--out", str(path.parent)], check=True)  # fmt: skip
    events = pd.read_csv(path, dtype={"user_id": str, "item_id": str, "event_type": str})
    if users is not None:
        keep = events["user_id"].drop_duplicates().head(users)
        events = events[events["user_id"].isin(set(keep))]
    return events.sort_values("timestamp", kind="stable")


def sample_key_sizes(client, prefix: str, per_kind: int = 2_000) -> dict[str, float]:
    """Mean MEMORY USAGE of each kind of key, from a sample of each."""
    sizes: dict[str, list[int]] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=5_000):
        kind = key.split(":")[1]
        seen = sizes.setdefault(kind, [])
        if len(seen) < per_kind:
            seen.append(int(client.memory_usage(key, samples=0) or 0))
        if all(len(v) >= per_kind for v in sizes.values()) and len(sizes) >= 6:
            break
    return {kind: sum(v) / len(v) for kind, v in sizes.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/equilibra-serving"))
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/scale"))
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis_memory: needs redis-server (bash scripts/redis.sh)")

    from equilibra.online.redis_state import RedisState

    events = events_of(args.work_dir, args.users)
    port = free_port()
    folder = tempfile.mkdtemp(prefix="equilibra-redis-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        state = RedisState(f"redis://127.0.0.1:{port}/0", timeout_s=30.0)
        empty = state.memory_bytes()
        rows = list(
            zip(
                events["user_id"].tolist(),
                events["item_id"].tolist(),
                events["event_type"].tolist(),
                events["timestamp"].astype(float).tolist(),
                strict=True,
            )
        )
        started = time.perf_counter()
        batch = 2_000
        with Progress() as progress:
            task = progress.add_task("learning events into Redis", total=len(rows))
            for i in range(0, len(rows), batch):
                state.learn_many(rows[i : i + batch])
                progress.advance(task, min(batch, len(rows) - i))
        learn_s = time.perf_counter() - started
        assert state.lost_writes == 0, "Redis dropped writes during the run"
        used = state.memory_bytes() - empty
        users, items = state.known_users(), state.n_items()
        kinds = sample_key_sizes(state.client, state.prefix)
        state.close()
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)

    per_million = used / users * 1e6 / GIB
    result = {
        "events": len(rows),
        "users": users,
        "items": items,
        "used_memory_bytes": used,
        "bytes_per_user_all_state": round(used / users, 1),
        "gib_per_million_users": round(per_million, 3),
        "metarank_gib_per_million_users": METARANK_GIB_PER_MILLION,
        "mean_key_bytes": {k: round(v, 1) for k, v in kinds.items()},
        "learn_events_per_s": round(len(rows) / learn_s),
        "command": "python benchmarks/redis_memory.py"
        + ("" if args.users is None else f" --users {args.users}"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Redis memory of the shared online state",
        "",
        f"Made by `{result['command']}`: the synthetic `retailrocket` preset's events learnt,",
        "in time order, into `RedisState` on a fresh redis-server; Redis's own `used_memory`",
        "after, less before. All of the online state is counted (users' histories, sessions and",
        "conversions; item counters, trends and first-seen times; co-visitation), per user.",
        "",
        "| | value |",
        "|---|---:|",
        f"| events | {len(rows):,} |",
        f"| users | {users:,} |",
        f"| items | {items:,} |",
        f"| Redis memory used | {used / GIB:.3f} GiB |",
        f"| **per million users** | **{per_million:.3f} GiB** |",
        f"| Metarank's published figure | {METARANK_GIB_PER_MILLION} GiB per million users |",
        f"| events learnt per second (one client, batches of {batch:,}) | "
        f"{result['learn_events_per_s']:,} |",
        "",
        "Mean size of one key of each kind (`MEMORY USAGE`, a sample of up to 2,000 each):",
        "",
        "| key | bytes |",
        "|---|---:|",
        *(f"| `{k}` | {v:,.0f} |" for k, v in sorted(kinds.items())),
        "",
    ]
    (args.out / "redis_memory.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
