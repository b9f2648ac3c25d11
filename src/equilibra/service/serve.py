"""`equilibra serve`: settings, logging, uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from equilibra.service.settings import load_settings

# The request loop and the impression writer's thread share the GIL. After a burst beyond
# capacity the writer drains its backlog at full speed, and with Python's default 5 ms switch
# interval each of a request's waits for the GIL could cost 5 ms: at 100 requests/s right
# after a 64-connection burst, p99 39-342 ms. At 0.5 ms it was 13-16 ms (3 runs each), at no
# measurable cost to throughput (benchmarks/serving.py, docs/service.md).
SWITCH_INTERVAL_S = 0.0005


def run(
    host: str, port: int, config: Path | None, log_level: str = "info", **overrides: Any
) -> None:
    import uvicorn

    from equilibra.service.app import create_app

    settings = load_settings(config, **overrides)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format='{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", '
        '"message": "%(message)s"}',
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
