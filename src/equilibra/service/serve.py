"""`equilibra serve`: settings, logging, uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from equilibra.service.settings import load_settings


def run(
    host: str, port: int, config: Path | None, log_level: str = "info", **overrides: Any
) -> None:
    import uvicorn

    from equilibra.service.app import create_app

    settings = load_settings(config, **overrides)
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
