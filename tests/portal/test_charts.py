"""Server-side SVG charts: parsed back as XML, bars and lines where the numbers put them, text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from tenants_app.portal.charts import (
    HEIGHT,
    OVER_COLOUR,
    PLOT_HEIGHT,
    TOP,
    WARNING_COLOUR,
    nice_ceiling,
    pressure_bar_svg,
    usage_trend_svg,
)

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(30)]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output, parsed to check it


def by_class(root: ET.Element, css: str) -> list[ET.Element]:
    return [element for element in root.iter() if element.get("class") == css]


def test_it_draws_one_bar_per_day_with_heights_proportional_to_runs() -> None:
    runs = [i % 7 for i in range(30)]

    root = parse(usage_trend_svg(days=DAYS, runs=runs, daily_limit=None, title="Runs"))

    bars = by_class(root, "bar")
    assert [bar.get("data-day") for bar in bars] == [day.isoformat() for day in DAYS]
    heights = [float(bar.get("height")) for bar in bars]
    # Without a limit the axis tops out at a round figure above the peak (6 * 1.1 -> 8).
    assert heights == pytest.approx([PLOT_HEIGHT * value / 8 for value in runs], abs=0.01)
    for bar in bars:
        # Each bar stands on the x axis.
        assert float(bar.get("y")) + float(bar.get("height")) == pytest.approx(TOP + PLOT_HEIGHT, abs=0.01)
    assert by_class(root, "limit-line") == []
    xs = [float(bar.get("x")) for bar in bars]
    assert xs == sorted(xs)


def test_it_puts_the_limit_and_80_percent_lines_at_their_values_and_colours_bars_by_share() -> None:
    runs = [0] * 27 + [4, 5, 7]  # under 80%, at 80% or more of 6, over

    root = parse(usage_trend_svg(days=DAYS, runs=runs, daily_limit=6, title="Runs"))

    top = 8  # 7 * 1.1 = 7.7 -> 8
    [limit] = by_class(root, "limit-line")
    [warning] = by_class(root, "warning-line")
    assert float(limit.get("y1")) == pytest.approx(TOP + PLOT_HEIGHT - PLOT_HEIGHT * 6 / top, abs=0.01)
    assert float(warning.get("y1")) == pytest.approx(TOP + PLOT_HEIGHT - PLOT_HEIGHT * 4.8 / top, abs=0.01)
    assert float(limit.get("y1")) < float(warning.get("y1"))  # higher value, higher on the page
    fills = [bar.get("fill") for bar in by_class(root, "bar")[-3:]]
    assert fills[1:] == [WARNING_COLOUR, OVER_COLOUR]
    assert fills[0] not in {WARNING_COLOUR, OVER_COLOUR}
    [label] = by_class(root, "limit-line-label")
    assert label.text == "limit 6"


def test_it_keeps_a_limit_above_every_bar_inside_the_chart() -> None:
    root = parse(usage_trend_svg(days=DAYS, runs=[1] * 30, daily_limit=100, title="Runs"))

    [limit] = by_class(root, "limit-line")
    assert TOP <= float(limit.get("y1")) < TOP + PLOT_HEIGHT
    assert 0 < float(limit.get("y1")) < HEIGHT


def test_it_labels_axes_and_describes_the_chart_for_screen_readers() -> None:
    root = parse(usage_trend_svg(days=DAYS, runs=[0] * 29 + [5], daily_limit=6, title="acme: last 30 days"))

    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "acme: last 30 days"
    description = root.find(f"{SVG}desc").text
    assert "5 in total" in description
    assert "at most 5 on 2026-03-30" in description
    assert "1 of 30 days at or above 80%" in description
    x_labels = [label.text for label in by_class(root, "x-label")]
    assert x_labels[-1] == "03-30"  # the last day is always labelled
    assert len(x_labels) == 5  # weekly: 30 days leave no room for more
    assert {label.text for label in by_class(root, "y-label")} == {"0", "4", "8"}  # 6 * 1.1 -> 8


def test_it_escapes_every_text_it_is_given() -> None:
    title = '</title><script>alert("x")</script> & <b>'

    svg = usage_trend_svg(days=DAYS[:3], runs=[1, 2, 3], daily_limit=None, title=title)

    assert "<script>" not in svg
    root = parse(svg)
    assert root.find(f"{SVG}title").text == title
    assert not list(root.iter(f"{SVG}script"))


def test_it_refuses_days_and_runs_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        usage_trend_svg(days=DAYS, runs=[1], daily_limit=6, title="Runs")


def test_it_draws_an_empty_period_without_dividing_by_zero() -> None:
    root = parse(usage_trend_svg(days=[], runs=[], daily_limit=None, title="Nothing"))

    assert by_class(root, "bar") == []
    assert root.find(f"{SVG}desc").text == "No days to show."


@pytest.mark.parametrize(
    ("ratio", "filled", "colour"),
    [(0.0, 0.0, None), (0.5, 60.0, None), (0.85, 102.0, WARNING_COLOUR), (1.7, 120.0, OVER_COLOUR)],
)
def test_it_fills_a_pressure_bar_to_its_share_capped_at_full(
    ratio: float, filled: float, colour: str
) -> None:
    root = parse(pressure_bar_svg(ratio=ratio, label="5 of 6 <today>"))

    [fill] = by_class(root, "fill")
    assert float(fill.get("width")) == pytest.approx(filled)
    if colour:
        assert fill.get("fill") == colour
    [tick] = by_class(root, "warning-tick")
    assert float(tick.get("x1")) == pytest.approx(96.0)
    assert root.find(f"{SVG}title").text == "5 of 6 <today>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1), (0.3, 0.3), (7.7, 8), (11, 12), (22, 25), (27.5, 30), (110, 120), (950, 1000)],
)
def test_it_rounds_the_axis_top_up_to_a_readable_figure(value: float, expected: float) -> None:
    assert nice_ceiling(value) == pytest.approx(expected)


def test_it_colours_exactly_80_percent_of_the_limit_as_a_warning() -> None:
    # 12 of 15 is 80% exactly: the boundary belongs to the warning, by the rule admission uses.
    root = parse(usage_trend_svg(days=DAYS[:2], runs=[11, 12], daily_limit=15, title="Runs"))

    fills = [bar.get("fill") for bar in by_class(root, "bar")]
    assert fills[1] == WARNING_COLOUR
    assert fills[0] != WARNING_COLOUR
    assert "1 of 2 days at or above 80%" in ET.tostring(root, encoding="unicode")
