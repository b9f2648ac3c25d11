"""The two references `benchmarks/serving.py` runs beside Equilibra, on the same server stack
(FastAPI + uvicorn, one worker, no access log):

    python benchmarks/serving_refs.py ceiling --port 8001
        POST /v1/recommend answers a fixed list of 20 items: what the stack itself costs.
    python benchmarks/serving_refs.py implicit --db sqlite:///shop.db --port 8002
        the service a team writes first: implicit's ALS fitted at start on the store's events,
        POST /v1/recommend = `model.recommend` for the user (popular items for a stranger);
        no exploration, no logging, no online state.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

FIXED = [{"item_id": f"i{i}", "score": 1.0 - i / 100} for i in range(20)]


def ceiling_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/recommend")
    def recommend(body: dict[str, Any]) -> dict[str, Any]:
        return {"items": FIXED[: int(body.get("k", 20))]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def implicit_app(db: str, factors: int, iterations: int) -> Any:
    import scipy.sparse as sp
    from fastapi import FastAPI
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from equilibra.store import open_store

    started = time.perf_counter()
    with open_store(db) as store:
        events = store.events_frame(columns=["user_id", "item_id"])
    users, user_codes = np.unique(events["user_id"].to_numpy(dtype=str), return_inverse=True)
    items, item_codes = np.unique(events["item_id"].to_numpy(dtype=str), return_inverse=True)
    matrix = sp.csr_matrix(
        (np.ones(len(events), dtype=np.float32), (user_codes, item_codes)),
        shape=(len(users), len(items)),
    )
    matrix.sum_duplicates()
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, random_state=0)
        model.fit(matrix, show_progress=False)
    index = {u: i for i, u in enumerate(users.tolist())}
    popular = items[np.argsort(-np.asarray(matrix.sum(axis=0)).ravel())[:100]].tolist()
    print(f"implicit ALS fitted in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    app = FastAPI()

    @app.post("/v1/recommend")
    def recommend(body: dict[str, Any]) -> dict[str, Any]:
        k = int(body.get("k", 20))
        user = index.get(str(body.get("user_id")))
        if user is None:
            return {"items": [{"item_id": i, "score": 0.0} for i in popular[:k]]}
        ids, scores = model.recommend(user, matrix[user], N=k)
        return {
            "items": [
                {"item_id": items[i], "score": float(s)}
                for i, s in zip(ids.tolist(), scores.tolist(), strict=True)
            ]
        }

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["ceiling", "implicit"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    import uvicorn

    app = (
        ceiling_app()
        if args.kind == "ceiling"
        else implicit_app(args.db, args.factors, args.iterations)
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
