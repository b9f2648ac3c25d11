"""Charts drawn as inline SVG on the server: no JavaScript, no CDN, nothing fetched at run
time, and a page that is complete when it arrives (a headless browser, a screenshot or a mail
client shows the same thing). Each chart is one function from numbers to an SVG string; labels
are escaped here, so a template may insert the result as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind-safe (Okabe–Ito), in the order series are given.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 30

Point = tuple[float, float]


@dataclass(frozen=True)
class Band:
    """One row of an interval chart: a value and its interval."""

    label: str
    value: float
    low: float
    high: float
    group: int | None = None  # rows of one group share a colour (default: a colour per row)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 × a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def number(value: float) -> str:
    """Short tick and tooltip text: 12.3k, 0.042, 1.2M."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def time_label(stamp: float, span: float) -> str:
    t = time.gmtime(stamp)
    if span > 2 * 86_400:
        return time.strftime("%d %b", t)
    if span > 3_600:
        return time.strftime("%H:%M", t)
    return time.strftime("%H:%M:%S", t)


def _frame(title: str, width: int, height: int, body: str, kind: str) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(kind)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def _empty(title: str, message: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    body = (
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fafafa" '
        f'stroke="#ddd"/><text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
        f'fill="#888" font-size="13">{escape(message)}</text>'
    )
    return _frame(title, width, height, body, "empty")


def line_chart(
    title: str,
    series: Mapping[str, Sequence[Point]],
    y_label: str = "",
    times: bool = True,
    empty: str = "no data yet",
    y_min: float | None = 0.0,
    width: int = WIDTH,
    height: int = HEIGHT,
    steps: bool = False,
) -> str:
    """Lines over x (Unix seconds when `times`), one per series, with a legend; `steps`: a
    value holds until the next point (a setting that changes now and then)."""
    drawn = {
        name: [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        for name, points in series.items()
    }
    drawn = {name: points for name, points in drawn.items() if points}
    if not drawn:
        return _empty(title, empty, width, height)
    xs = [x for points in drawn.values() for x, _ in points]
    ys = [y for points in drawn.values() for _, y in points]
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x0, x1 = x0 - 1.0, x0 + 1.0
    low = min(ys) if y_min is None else min(y_min, min(ys))
    y_ticks = nice_ticks(low, max(ys))
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fcfcfc"/>']
    for tick in y_ticks:
        y = sy(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#555">{escape(number(tick))}</text>'
        )
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        label = time_label(x, x1 - x0) if times else number(x)
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        parts.append(
            f'<text x="{sx(x):.1f}" y="{height - 10}" text-anchor="{anchor}" font-size="11" '
            f'fill="#555">{escape(label)}</text>'
        )
    if y_label:
        parts.append(
            f'<text x="12" y="{TOP + plot_h / 2:.1f}" font-size="11" fill="#555" '
            f'text-anchor="middle" transform="rotate(-90 12 {TOP + plot_h / 2:.1f})">'
            f"{escape(y_label)}</text>"
        )
    legend_x = LEFT + 8
    for index, (name, points) in enumerate(drawn.items()):
        colour = PALETTE[index % len(PALETTE)]
        moves = []
        for i, (x, y) in enumerate(points):
            if i and steps:  # across at the old value, then up or down to the new one
                moves.append(f"L{sx(x):.1f},{sy(points[i - 1][1]):.1f}")
            moves.append(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}")
        path = " ".join(moves)
        last_x, last_y = points[-1]
        parts.append(
            f'<path class="series" data-series="{escape(name)}" d="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<circle cx="{sx(last_x):.1f}" cy="{sy(last_y):.1f}" r="3" fill="{colour}">'
            f"<title>{escape(name)}: {escape(number(last_y))}</title></circle>"
        )
        if len(drawn) > 1 or name:
            parts.append(
                f'<rect x="{legend_x}" y="{TOP + 4}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{legend_x + 14}" y="{TOP + 13}" font-size="11" fill="#333">'
                f"{escape(name)}</text>"
            )
            legend_x += 24 + 7 * len(name)
    return _frame(title, width, height, "".join(parts), "line")


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, float]],
    empty: str = "no data yet",
    width: int = WIDTH,
    colour: str = PALETTE[0],
) -> str:
    """Horizontal bars, labelled, largest value spanning the width."""
    if not bars:
        return _empty(title, empty, width, 80)
    row, label_w = 20, 170
    height = TOP + row * len(bars) + 8
    top = max((v for _, v in bars), default=0.0) or 1.0
    plot_w = width - label_w - 70
    parts = []
    for index, (label, value) in enumerate(bars):
        y = TOP + index * row
        w = max(plot_w * max(value, 0.0) / top, 1.0)
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="11" '
            f'fill="#333">{escape(shown)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" '
            f'fill="{colour}"><title>{escape(label)}: {escape(number(value))}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11" fill="#555">'
            f"{escape(number(value))}</text>"
        )
    return _frame(title, width, height, "".join(parts), "bar")


def interval_chart(
    title: str,
    bands: Sequence[Band],
    reference: float | None = None,
    empty: str = "no estimate yet",
    width: int = WIDTH,
) -> str:
    """Each row's value as a dot and its interval as a line (a forest plot); `reference`: a
    vertical line (the control's value, or 0 for differences)."""
    finite = [b for b in bands if all(math.isfinite(v) for v in (b.value, b.low, b.high))]
    if not finite:
        return _empty(title, empty, width, 80)
    row, label_w = 24, 170
    height = TOP + row * len(finite) + BOTTOM
    values = [v for b in finite for v in (b.low, b.high, b.value)]
    if reference is not None:
        values.append(reference)
    ticks = nice_ticks(min(values), max(values), 4)
    x0, x1 = ticks[0], ticks[-1]
    plot_w = width - label_w - RIGHT - 10

    def sx(x: float) -> float:
        return label_w + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    parts = []
    bottom = TOP + row * len(finite)
    for tick in ticks:
        parts.append(
            f'<line x1="{sx(tick):.1f}" x2="{sx(tick):.1f}" y1="{TOP}" y2="{bottom}" '
            f'stroke="#eee"/><text x="{sx(tick):.1f}" y="{bottom + 16}" text-anchor="middle" '
            f'font-size="11" fill="#555">{escape(number(tick))}</text>'
        )
    if reference is not None:
        parts.append(
            f'<line x1="{sx(reference):.1f}" x2="{sx(reference):.1f}" y1="{TOP}" '
            f'y2="{bottom}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    for index, band in enumerate(finite):
        y = TOP + index * row + row / 2
        colour = PALETTE[(index if band.group is None else band.group) % len(PALETTE)]
        tip = f"{band.label}: {number(band.value)} [{number(band.low)}, {number(band.high)}]"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#333">{escape(band.label)}</text>'
            f'<line class="interval" x1="{sx(band.low):.1f}" x2="{sx(band.high):.1f}" '
            f'y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{sx(band.value):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return _frame(title, width, height, "".join(parts), "interval")
