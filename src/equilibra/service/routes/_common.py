"""What the routers share: the engine of the app, and turning a reject into a 422."""

from __future__ import annotations

import pandas as pd
from fastapi import HTTPException, Request

from equilibra.service.engine import Engine


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def reject(what: str, rejects: pd.DataFrame) -> HTTPException:
    """422 naming the first bad element and its field: `events[3].timestamp: cannot parse …`."""
    first = rejects.iloc[0]
    index = int(first["_row"]) if "_row" in rejects else 0
    return HTTPException(
        422,
        f"{what}[{index}].{first['reason']}"
        + (f" (and {len(rejects) - 1} more)" if len(rejects) > 1 else ""),
    )
