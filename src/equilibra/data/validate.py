"""Vectorised validation of event, item and user frames for bulk import.

Applies the rules of :mod:`equilibra.domain` to whole columns at once. Every row ends up either in
the valid frame or in the rejects frame with a reason; none is dropped silently.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from equilibra.data.columns import (
    EVENT_COLUMNS,
    IMPRESSION_COLUMNS,
    ITEM_COLUMNS,
    USER_COLUMNS,
    Columns,
)
from equilibra.domain import (
    DEFAULT_RULES,
    EVENT_TYPES,
    MILLISECONDS_HINT_THRESHOLD,
    EventType,
    ValidationRules,
)

C = Columns
_HASH_KEY = "equilibra-events"  # exactly 16 characters, as pandas' hash key must be


@dataclass
class Checked:
    """The outcome of validating one chunk."""

    valid: pd.DataFrame
    rejects: pd.DataFrame  # source_row, reason, then the offending row's fields


class _Reasons:
    """Keeps the first failing reason for each row."""

    def __init__(self, index: pd.Index):
        self.reason = pd.Series(np.full(len(index), None, dtype=object), index=index)

    def flag(self, mask: pd.Series | np.ndarray, reason: str | pd.Series) -> None:
        mask = pd.Series(np.asarray(mask, dtype=bool), index=self.reason.index)
        new = mask & self.reason.isna()
        if new.any():
            self.reason[new] = reason[new] if isinstance(reason, pd.Series) else reason

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        bad = self.reason.notna()
        rejects = frame.loc[bad].copy()
        rejects.insert(0, "reason", self.reason[bad])
        return frame.loc[~bad], rejects


def clean_ids(column: pd.Series) -> pd.Series:
    """Ids as stripped strings; integral floats ("12.0" from a numeric column) lose the ".0".

    Returns an object column of Python strings (NA where missing). Stripping runs in Arrow and
    the original column is kept when nothing needed stripping, which is the common, fast case.
    """
    if pd.api.types.is_float_dtype(column):
        column = column.astype("Int64")
    if pd.api.types.is_numeric_dtype(column):
        column = column.astype("string")
    arrow = column.astype("string[pyarrow]")
    stripped = arrow.str.strip()
    not_text = pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty")
    if not_text or (stripped.fillna("") != arrow.fillna("")).any() or column.dtype != object:
        return stripped.astype(object).where(stripped.notna(), None)
    return column.where(column.notna(), None)


def _check_ids(frame: pd.DataFrame, field: str, reasons: _Reasons) -> pd.Series:
    if field not in frame:
        reasons.flag(np.ones(len(frame), dtype=bool), f"{field}: is missing")
        return pd.Series(None, index=frame.index, dtype=object)
    ids = clean_ids(frame[field])
    missing = ids.isna()
    reasons.flag(missing, f"{field}: is missing")
    reasons.flag(~missing & (ids.astype("string[pyarrow]").str.len() == 0), f"{field}: is empty")
    return ids


def parse_timestamp_column(column: pd.Series, unit: str = "s") -> tuple[pd.Series, pd.Series]:
    """-> (Unix seconds as float64 with NaN where unparseable, mask of unparseable non-empty)."""
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    if pd.api.types.is_datetime64_any_dtype(column):
        utc = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
        seconds = pd.Series(utc.astype("int64").to_numpy() / 1e9, index=column.index)
        seconds[column.isna()] = np.nan
        return seconds, pd.Series(False, index=column.index)
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64") * scale, pd.Series(False, index=column.index)
    try:  # the common case, all numbers: numpy's parser is ~7x faster than to_numeric
        return column.astype("float64") * scale, pd.Series(False, index=column.index)
    except (ValueError, TypeError):
        pass
    text = column.astype("string").str.strip()
    numeric = pd.to_numeric(text, errors="coerce").astype("float64") * scale
    needs_date = numeric.isna() & text.notna() & (text != "")
    if needs_date.any():
        dates = pd.to_datetime(text[needs_date], utc=True, errors="coerce", format="ISO8601")
        parsed = pd.Series(np.nan, index=dates.index)
        ok = dates.notna()
        parsed[ok] = dates[ok].astype("int64").to_numpy() / 1e9
        numeric[needs_date] = parsed
    unparseable = needs_date & numeric.isna()
    return numeric, unparseable


def check_timestamps(
    seconds: pd.Series,
    unparseable: pd.Series,
    raw: pd.Series,
    reasons: _Reasons,
    rules: ValidationRules,
    now: float | None,
    field: str = C.timestamp,
) -> None:
    reasons.flag(
        unparseable,
        f"{field}: cannot parse "
        + raw.astype("string").fillna("").map(repr)
        + " (expected ISO-8601 or Unix seconds)",
    )
    reasons.flag(seconds.isna(), f"{field}: is missing")
    latest = rules.latest_allowed(now if now is not None else time.time())
    too_late = seconds > latest
    if too_late.any():
        hint = np.where(
            seconds > MILLISECONDS_HINT_THRESHOLD,
            " (looks like milliseconds, expected seconds)",
            "",
        )
        # Formatted as text: a value past int64 (an absurd timestamp) cannot become Int64.
        shown = seconds.map(lambda v: "" if pd.isna(v) else f"{v:.0f}").astype("string")
        message = (
            f"{field}: "
            + shown
            + " lies too far in the future"
            + pd.Series(hint, index=seconds.index)
        )
        reasons.flag(too_late, message)
    reasons.flag(seconds < rules.min_timestamp, f"{field}: before 1980: a missing or broken date?")


def derive_event_ids(frame: pd.DataFrame) -> pd.Series:
    """A stable id from what the event says: the same event imported twice gets the same id."""
    key = pd.DataFrame(
        {
            "u": frame[C.user].astype(str).to_numpy(),
            "i": frame[C.item].astype(str).to_numpy(),
            "t": frame[C.event_type].astype(str).to_numpy(),
            "ms": np.round(frame[C.timestamp].to_numpy(dtype="float64") * 1000).astype("int64"),
            "v": frame[C.value].fillna(-1.0).to_numpy(dtype="float64"),
        }
    )
    hashed = pd.util.hash_pandas_object(key, index=False, hash_key=_HASH_KEY).to_numpy()
    digits = hashed.astype(">u8").tobytes().hex()  # one C call, then cheap slicing
    return pd.Series(
        ["h" + digits[i : i + 16] for i in range(0, len(digits), 16)],
        index=frame.index,
        dtype=object,
    )


def validate_events(
    frame: pd.DataFrame,
    rules: ValidationRules = DEFAULT_RULES,
    now: float | None = None,
    timestamp_unit: str = "s",
) -> Checked:
    """Canonical event columns in, (valid canonical frame, rejects) out."""
    reasons = _Reasons(frame.index)
    users = _check_ids(frame, C.user, reasons)
    items = _check_ids(frame, C.item, reasons)

    raw_type = frame[C.event_type] if C.event_type in frame else pd.Series(pd.NA, index=frame.index)
    types = raw_type.astype("string[pyarrow]").str.strip().str.lower()
    reasons.flag(types.isna() | (types == ""), f"{C.event_type}: is missing")
    unknown = ~types.isin(EVENT_TYPES)
    if unknown.any():
        reasons.flag(
            unknown,
            "event_type: unknown type "
            + types.fillna("").astype(object).map(repr)
            + f"; expected one of {', '.join(EVENT_TYPES)}",
        )
    types = types.astype(object)

    raw_ts = frame[C.timestamp] if C.timestamp in frame else pd.Series(pd.NA, index=frame.index)
    seconds, unparseable = parse_timestamp_column(raw_ts, timestamp_unit)
    check_timestamps(seconds, unparseable, raw_ts, reasons, rules, now)

    raw_value = frame[C.value] if C.value in frame else pd.Series(np.nan, index=frame.index)
    try:
        values = raw_value.astype("float64")
    except (ValueError, TypeError):
        values = pd.to_numeric(raw_value, errors="coerce").astype("float64")
        reasons.flag(
            values.isna() & raw_value.notna() & (raw_value.astype("string").str.strip() != ""),
            "value: is not a number",
        )
    reasons.flag(~np.isfinite(values.fillna(0.0)), "value: is not a finite number")
    is_rating = types == EventType.RATING.value
    reasons.flag(is_rating & values.isna(), "value: a rating event needs a numeric value")
    out_of_range = is_rating & ((values < rules.rating_min) | (values > rules.rating_max))
    if out_of_range.any():
        reasons.flag(
            out_of_range,
            "value: rating "
            + values.astype("string").fillna("")
            + f" outside [{rules.rating_min:g}, {rules.rating_max:g}]",
        )

    canonical = pd.DataFrame(
        {
            C.user: users,
            C.item: items,
            C.event_type: types,
            C.timestamp: seconds,
            C.value: values,
        },
        index=frame.index,
    )
    for optional in (C.event_id, C.impression_id):
        if optional in frame:
            ids = clean_ids(frame[optional])
            canonical[optional] = ids.where(ids.notna() & (ids != ""), None)
        else:
            canonical[optional] = pd.Series(None, index=frame.index, dtype=object)
    canonical[C.context] = _context_column(frame)

    valid, rejects = reasons.split(canonical)
    rejects = frame.loc[rejects.index].assign(reason=rejects["reason"])
    valid = valid.copy()
    missing_id = valid[C.event_id].isna()
    if missing_id.all():
        valid[C.event_id] = derive_event_ids(valid)
    elif missing_id.any():
        valid.loc[missing_id, C.event_id] = derive_event_ids(valid.loc[missing_id])
    return Checked(
        valid=valid[list(EVENT_COLUMNS)].reset_index(drop=True), rejects=_order_rejects(rejects)
    )


def _context_column(frame: pd.DataFrame) -> pd.Series:
    if C.context not in frame:
        return pd.Series(None, index=frame.index, dtype=object)
    column = frame[C.context].astype(object)
    given = column.notna()
    if pd.api.types.infer_dtype(column[given], skipna=True) in ("string", "empty"):
        return column.where(given, None)  # already JSON text (a file): nothing to encode
    return column.map(
        lambda v: (
            None
            if v is None or (isinstance(v, float) and np.isnan(v))
            else (v if isinstance(v, str) else json.dumps(v, sort_keys=True))
        )
    )


def _order_rejects(rejects: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in (C.source_row, "reason") if c in rejects]
    return rejects[first + [c for c in rejects.columns if c not in first]].reset_index(drop=True)


def validate_items(
    frame: pd.DataFrame, rules: ValidationRules = DEFAULT_RULES, now: float | None = None
) -> Checked:
    reasons = _Reasons(frame.index)
    ids = _check_ids(frame, C.item, reasons)
    out = pd.DataFrame({C.item: ids.astype(object)}, index=frame.index)
    for text in (C.title, C.description):
        out[text] = (
            frame[text].astype(object).where(frame[text].notna(), None) if text in frame else None
        )
    if C.categories in frame:
        cats = frame[C.categories].map(_join_categories)
        out[C.categories] = cats
    else:
        out[C.categories] = None
    if C.price in frame:
        price = pd.to_numeric(frame[C.price], errors="coerce").astype("float64")
        given = frame[C.price].notna() & (frame[C.price].astype("string").str.strip() != "")
        reasons.flag(given & price.isna(), "price: is not a number")
        reasons.flag(
            given & price.notna() & ~np.isfinite(price.fillna(0)), "price: is not a finite number"
        )
        reasons.flag(price < 0, "price: " + price.astype("string").fillna("") + " is negative")
        out[C.price] = price
    else:
        out[C.price] = np.nan
    out[C.available] = frame[C.available].map(_parse_bool) if C.available in frame else True
    reasons.flag(out[C.available].isna(), "available: expected true/false/1/0")
    if C.created_at in frame:
        raw = frame[C.created_at]
        seconds, unparseable = parse_timestamp_column(raw)
        given = raw.notna() & (raw.astype("string").str.strip() != "")
        sub = _Reasons(frame.index)
        check_timestamps(seconds, unparseable, raw, sub, rules, now, field=C.created_at)
        reasons.flag(given & sub.reason.notna(), sub.reason)
        out[C.created_at] = seconds.where(given, np.nan)
    else:
        out[C.created_at] = np.nan
    out[C.attributes] = _attributes(frame, set(ITEM_COLUMNS) | {C.source_row}, reasons)
    valid, rejects = reasons.split(out)
    rejects = frame.loc[rejects.index].assign(reason=rejects["reason"])
    valid = valid.drop_duplicates(C.item, keep="last")
    return Checked(
        valid=valid[list(ITEM_COLUMNS)].reset_index(drop=True), rejects=_order_rejects(rejects)
    )


def validate_users(frame: pd.DataFrame) -> Checked:
    reasons = _Reasons(frame.index)
    ids = _check_ids(frame, C.user, reasons)
    out = pd.DataFrame({C.user: ids.astype(object)}, index=frame.index)
    out[C.attributes] = _attributes(frame, set(USER_COLUMNS) | {C.source_row}, reasons)
    valid, rejects = reasons.split(out)
    rejects = frame.loc[rejects.index].assign(reason=rejects["reason"])
    valid = valid.drop_duplicates(C.user, keep="last")
    return Checked(
        valid=valid[list(USER_COLUMNS)].reset_index(drop=True), rejects=_order_rejects(rejects)
    )


def _join_categories(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    parts = value.split("|") if isinstance(value, str) else [str(v) for v in value]  # type: ignore[attr-defined]
    cleaned = [p.strip() for p in parts if p and p.strip()]
    return "|".join(cleaned) or None


def _parse_bool(value: object) -> bool | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"1", "true", "t", "yes", "y", "1.0"}:
        return True
    if text in {"0", "false", "f", "no", "n", "0.0"}:
        return False
    return None


def _attribute_object(value: object) -> dict[str, object] | str:
    """A cell of the `attributes` column as a dict, or the reason it cannot be one."""
    if isinstance(value, dict):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return {}
    if not isinstance(value, str):
        return f"attributes: expected a JSON object, got {type(value).__name__}"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        return f"attributes: not JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(parsed, dict):
        return "attributes: expected a JSON object"
    return parsed


def _attributes(frame: pd.DataFrame, known: set[str], reasons: _Reasons) -> pd.Series:
    """Columns the table does not name become free attributes, stored as JSON; a malformed
    `attributes` cell is a reject with its reason."""
    extra = [c for c in frame.columns if c not in known]
    if C.attributes in frame:
        parsed = frame[C.attributes].map(_attribute_object)
        broken = parsed.map(lambda v: isinstance(v, str))
        if broken.any():
            reasons.flag(broken, parsed.where(broken, ""))
        base = parsed.where(~broken, pd.Series([{}] * len(frame), index=frame.index))
    else:
        base = pd.Series([{}] * len(frame), index=frame.index)
    if not extra:
        return base.map(lambda d: json.dumps(d, sort_keys=True, default=str))
    records = frame[extra].astype(object).where(frame[extra].notna(), None).to_dict("records")
    return pd.Series(
        [
            json.dumps(
                {**b, **{k: v for k, v in r.items() if v is not None}}, sort_keys=True, default=str
            )
            for b, r in zip(base, records, strict=True)
        ],
        index=frame.index,
    )


def _numeric(
    frame: pd.DataFrame, name: str, reasons: _Reasons, default: float = np.nan
) -> pd.Series:
    """An optional numeric column: empty cells are missing, anything else must be a number."""
    if name not in frame:
        return pd.Series(default, index=frame.index, dtype="float64")
    raw = frame[name]
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    given = raw.notna() & (raw.astype("string").str.strip() != "")
    reasons.flag(given & values.isna(), f"{name}: is not a number")
    reasons.flag(given & values.notna() & ~np.isfinite(values.fillna(0)), f"{name}: is not finite")
    return values.where(given, default)


def _text(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(None, index=frame.index, dtype=object)
    column = frame[name].astype(object)
    return column.where(column.notna(), None).map(lambda v: v if v is None else str(v))


def _candidates_column(frame: pd.DataFrame, reasons: _Reasons) -> pd.Series:
    from equilibra.data.impressions import decode_candidates

    column = _text(frame, C.candidates)
    for index, text in column.dropna().items():
        try:
            decode_candidates(text)
        except ValueError as exc:
            reasons.flag(frame.index == index, f"candidates: {exc}")
    return column


def validate_impressions(
    frame: pd.DataFrame, rules: ValidationRules = DEFAULT_RULES, now: float | None = None
) -> Checked:
    """Rows of the impression log (design.md): one shown item each, its propensity in (0, 1],
    its position >= 1; every optional number must be a number (a reward `"abc"` is a reject,
    not a missing reward)."""
    reasons = _Reasons(frame.index)
    out = pd.DataFrame(index=frame.index)
    for name in (C.impression_id, C.user, C.item):
        out[name] = _check_ids(frame, name, reasons).astype(object)
    position = pd.to_numeric(frame[C.position], errors="coerce")
    reasons.flag(
        position.isna() | (position < 1) | (position % 1 != 0),
        "position: must be a whole number >= 1",
    )
    out[C.position] = position.fillna(0).astype("int64")
    raw_ts = frame[C.timestamp]
    seconds, unparseable = parse_timestamp_column(raw_ts)
    check_timestamps(seconds, unparseable, raw_ts, reasons, rules, now)
    out[C.timestamp] = seconds
    propensity = pd.to_numeric(frame[C.propensity], errors="coerce").astype("float64")
    reasons.flag(
        propensity.isna() | (propensity <= 0) | (propensity > 1), "propensity: must lie in (0, 1]"
    )
    out[C.propensity] = propensity
    error = _numeric(frame, C.propensity_error, reasons, default=0.0)
    reasons.flag(error < 0, "propensity_error: must be >= 0")
    out[C.propensity_error] = error
    prior = _numeric(frame, C.prior, reasons)
    reasons.flag((prior <= 0) | (prior >= 1), "prior: must lie in (0, 1)")
    out[C.prior] = prior
    exposure = _numeric(frame, C.exposure, reasons)
    reasons.flag((exposure <= 0) | (exposure > 1), "exposure: must lie in (0, 1]")
    out[C.exposure] = exposure
    out[C.score] = _numeric(frame, C.score, reasons)
    reward = _numeric(frame, C.reward, reasons)
    reasons.flag(reward < 0, "reward: must be >= 0")
    out[C.reward] = reward
    for name in (
        C.placement,
        C.segment,
        C.policy,
        C.model_version,
        C.reason,
        C.variant,
        C.replica,
    ):
        out[name] = _text(frame, name)
    out[C.explore] = None
    if C.explore in frame:
        raw = frame[C.explore]
        given = raw.notna() & (raw.astype("string").str.strip() != "")
        explore = raw.where(given, None).map(lambda v: None if v is None else _parse_bool(v))
        reasons.flag(given & explore.isna(), "explore: expected true/false/1/0")
        out[C.explore] = explore.astype(object)
    out[C.candidates] = _candidates_column(frame, reasons)
    out[C.context] = _context_column(frame)
    for index, text in out[C.context].dropna().items():
        try:
            json.loads(text)
        except (TypeError, json.JSONDecodeError):
            reasons.flag(frame.index == index, "context: not JSON")
    bad = reasons.reason.notna()
    valid = out.loc[~bad]
    # The row's own `reason` (why the policy showed the item) is kept as `shown_reason`: a
    # rejects file's `reason` says why the row was rejected.
    rejects = (
        frame.loc[bad].rename(columns={C.reason: "shown_reason"}).assign(reason=reasons.reason[bad])
    )
    return Checked(
        valid=valid[list(IMPRESSION_COLUMNS)].reset_index(drop=True),
        rejects=_order_rejects(rejects),
    )
