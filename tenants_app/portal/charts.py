"""Server-side SVG charts for the portal: no JavaScript, no CDN, every text escaped.

The SVG is inlined in the page, so axis lines and labels use `currentColor` and follow the admin's
light or dark theme; bars use fixed colours that read on both. Days are written as the portal writes
dates (ISO, tenants_app/presentation.py); an axis label keeps only the month and day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from html import escape

from django.utils.safestring import SafeString, mark_safe

from tenants_app.presentation import timestamp
from tenants_app.services.quota_rules import WARNING_PERCENT, WARNING_SHARE, at_warning

NORMAL_COLOUR = "#417690"  # the admin's own blue
WARNING_COLOUR = "#c77d0a"
OVER_COLOUR = "#ba2121"
LIMIT_COLOUR = "#ba2121"

# Trend chart geometry, in SVG user units. The chart scales to its container's width, text with it: a
# narrow view box keeps the text readable on a phone (13 units drawn ~340 px wide are ~10.5 px), and
# the pages cap the chart's width so that it is not oversized on a laptop.
WIDTH, HEIGHT = 420, 240
LEFT, RIGHT, TOP, BOTTOM = 40, 68, 14, 42
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
FONT_SIZE = 13
BAR_SHARE = 0.7  # of each day's slot; the rest is the gap between bars
# Days between x-axis labels: the smallest that leaves room for a label ("12-03") and a gap.
LABEL_STEPS = (1, 2, 7, 14, 28)
LABEL_ROOM = FONT_SIZE * 3.6


def usage_trend_svg(
    *, days: Sequence[date], runs: Sequence[int], daily_limit: int | None, title: str
) -> SafeString:
    """Bars of runs per day, with the daily limit and its 80% as lines, axes labelled, accessible."""
    if len(days) != len(runs):
        raise ValueError("days and runs must have the same length")
    count = len(days)
    top = nice_ceiling(max([*runs, daily_limit or 0, 1]) * 1.1)
    slot = PLOT_WIDTH / max(count, 1)
    bar_width = slot * BAR_SHARE

    def y_of(value: float) -> float:
        return TOP + PLOT_HEIGHT - PLOT_HEIGHT * value / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="usage-trend" role="img"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet"'
        f' aria-labelledby="trend-title trend-desc" font-family="sans-serif" font-size="{FONT_SIZE}">',
        f'<title id="trend-title">{escape(title)}</title>',
        f'<desc id="trend-desc">{escape(_describe(days, runs, daily_limit))}</desc>',
    ]
    # Horizontal grid and y-axis labels at 0, half and the top.
    for value in (0, top / 2, top):
        y = y_of(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.2f}" x2="{LEFT + PLOT_WIDTH}" y2="{y:.2f}"'
            ' stroke="currentColor" stroke-opacity="0.15"/>'
        )
        parts.append(
            f'<text class="y-label" x="{LEFT - 6}" y="{y + 4:.2f}" text-anchor="end"'
            f' fill="currentColor">{_number(value)}</text>'
        )
    for index, (day, value) in enumerate(zip(days, runs, strict=True)):
        height = PLOT_HEIGHT * value / top
        x = LEFT + index * slot + (slot - bar_width) / 2
        colour = _colour(value, daily_limit)
        parts.append(
            f'<rect class="bar" data-day="{day.isoformat()}" data-runs="{int(value)}"'
            f' x="{x:.2f}" y="{TOP + PLOT_HEIGHT - height:.2f}" width="{bar_width:.2f}" height="{height:.2f}"'
            f' fill="{colour}"><title>{escape(f"{timestamp(day)}: {value} runs")}</title></rect>'
        )
    step = next((each for each in LABEL_STEPS if each * slot >= LABEL_ROOM), LABEL_STEPS[-1])
    for index, day in enumerate(days):
        # Counted back from the last day, so that today is always labelled.
        if (count - 1 - index) % step == 0:
            x = LEFT + index * slot + slot / 2
            parts.append(
                f'<text class="x-label" x="{x:.2f}" y="{TOP + PLOT_HEIGHT + FONT_SIZE + 4}"'
                f' text-anchor="middle" fill="currentColor">{escape(f"{day:%m-%d}")}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{TOP + PLOT_HEIGHT}" x2="{LEFT + PLOT_WIDTH}"'
        f' y2="{TOP + PLOT_HEIGHT}" stroke="currentColor"/>'
    )
    parts.append(
        f'<text class="axis-title" x="{LEFT}" y="{HEIGHT - 6}" fill="currentColor">Runs per day (UTC)</text>'
    )
    if daily_limit:
        for css, value, label, dash in (
            ("limit-line", daily_limit, f"limit {daily_limit}", "6 4"),
            ("warning-line", daily_limit * WARNING_SHARE, f"{WARNING_PERCENT}%", "2 3"),
        ):
            y = y_of(value)
            colour = LIMIT_COLOUR if css == "limit-line" else WARNING_COLOUR
            parts.append(
                f'<line class="{css}" x1="{LEFT}" y1="{y:.2f}" x2="{LEFT + PLOT_WIDTH}" y2="{y:.2f}"'
                f' stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>'
            )
            parts.append(
                f'<text class="{css}-label" x="{LEFT + PLOT_WIDTH + 4}" y="{y + 4:.2f}"'
                f' fill="{colour}">{escape(label)}</text>'
            )
    parts.append("</svg>")
    # Safe: every piece of text above went through escape(), and numbers are formatted by us.
    return mark_safe("".join(parts))  # noqa: S308


def pressure_bar_svg(*, ratio: float, label: str, width: int = 120, height: int = 12) -> SafeString:
    """A small horizontal bar filled to `ratio` of a limit (capped at full), with a tick at 80%."""
    shown = max(0.0, min(ratio, 1.0))
    colour = _colour_for_ratio(ratio)
    tick = width * WARNING_SHARE
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pressure-bar" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<rect class="track" x="0" y="0" width="{width}" height="{height}" rx="2"'
        ' fill="currentColor" fill-opacity="0.12"/>'
        f'<rect class="fill" x="0" y="0" width="{width * shown:.2f}" height="{height}" rx="2"'
        f' fill="{colour}"/>'
        f'<line class="warning-tick" x1="{tick:.2f}" y1="0" x2="{tick:.2f}" y2="{height}"'
        ' stroke="currentColor" stroke-opacity="0.6"/>'
        "</svg>"
    )
    return mark_safe(svg)  # noqa: S308 - the label is escaped, the rest is ours


def nice_ceiling(value: float) -> float:
    """The smallest round figure (1, 1.2, 1.5, 2, ... 8 times a power of ten) at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    # Fine steps keep the bars tall: 27.5 becomes 30, not 50. Each halves to a readable mid label.
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _colour(value: int, limit: int | None) -> str:
    """A day's bar: counts against a limit, by the integer test admission uses."""
    if not limit:
        return NORMAL_COLOUR
    if value >= limit:
        return OVER_COLOUR
    return WARNING_COLOUR if at_warning(used=value, limit=limit) else NORMAL_COLOUR


def _colour_for_ratio(ratio: float) -> str:
    # The dashboard hands its pressure bars a ratio it computed in SQL by the same rule.
    if ratio >= 1:
        return OVER_COLOUR
    if ratio >= WARNING_SHARE:
        return WARNING_COLOUR
    return NORMAL_COLOUR


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _describe(days: Sequence[date], runs: Sequence[int], daily_limit: int | None) -> str:
    """The chart in words, for screen readers."""
    if not days:
        return "No days to show."
    total = sum(runs)
    peak_index = max(range(len(runs)), key=lambda i: runs[i])
    text = (
        f"Pipeline runs per day from {timestamp(days[0])} to {timestamp(days[-1])}: {total} in total, "
        f"at most {runs[peak_index]} on {timestamp(days[peak_index])}."
    )
    if daily_limit:
        warned = sum(1 for value in runs if at_warning(used=value, limit=daily_limit))
        text += (
            f" Daily limit {daily_limit}; {warned} of {len(days)} days at or above {WARNING_PERCENT}% of it."
        )
    else:
        text += " No daily limit."
    return text
