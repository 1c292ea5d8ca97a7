"""web/admin/charts.py: scales, positions, escaping and empty series, without a browser."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal as D

from web.admin.charts import BOTTOM, HEIGHT, TOP, Bar, Mark, Point, Tick, bar_chart, compact, line_chart, nice_scale

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))  # well-formed XML, or this raises


def test_nice_scale_covers_the_data_with_round_steps():
    assert nice_scale(D(0), D("12.5")) == [D(0), D(5), D(10), D(15)]
    assert nice_scale(D(0), D(1000)) == [D(0), D(250), D(500), D(750), D(1000)]
    assert nice_scale(D(3), D(7)) == [D(0), D(2), D(4), D(6), D(8)]  # bars start at zero
    assert nice_scale(D(-40), D(100))[0] <= D(-40) and nice_scale(D(-40), D(100))[-1] >= D(100)
    assert nice_scale(D(0), D(0)) == [D(0), D("0.25"), D("0.50"), D("0.75"), D("1.00")]
    assert nice_scale(D("0.1"), D("0.37"))[-1] == D("0.40")
    assert compact(D(1500)) == "1.5k" and compact(D(2_000_000)) == "2M" and compact(D("0.5")) == "0.5"


def test_bars_scale_to_the_plot_and_say_their_values():
    svg = parse(bar_chart([Bar("a", D(50)), Bar("b", D(100)), Bar("c", None)], label="Use", empty="none",
                          unit="kWh", values=True))
    rects = svg.findall(f"{SVG}rect")
    assert len(rects) == 2  # None is a gap, not a zero bar
    heights = [float(r.get("height")) for r in rects]
    assert abs(heights[1] - 2 * heights[0]) < 0.2  # 100 is twice as tall as 50
    bottom = HEIGHT - BOTTOM
    assert abs(float(rects[1].get("y")) + heights[1] - bottom) < 0.2  # bars stand on the zero line
    assert float(rects[1].get("y")) >= TOP
    assert [r.find(f"{SVG}title").text for r in rects] == ["a: 50 kWh", "b: 100 kWh"]
    texts = [t.text for t in svg.findall(f"{SVG}text")]
    assert {"a", "b", "c", "0", "100"} <= set(texts) and "50" in texts  # axis and value labels
    assert svg.get("viewBox") == "0 0 360 190" and svg.get("role") == "img"


def test_text_is_escaped():
    evil = '<script>alert("x")</script> & "quotes"'
    markup = str(bar_chart([Bar(evil, D(1), title=evil, kind='x" onload="y')], label=evil, empty="none"))
    assert "<script>" not in markup and 'onload="y"' not in markup
    svg = parse(markup)
    assert svg.find(f"{SVG}title").text == evil and svg.get("aria-label") == evil
    line = str(line_chart([Point(0, D(1)), Point(1, D(2))], label="l", empty="e", ticks=[Tick(0, evil)],
                          marks=[Mark(1, evil)]))
    assert "<script>" not in line and parse(line).find(f".//{SVG}path/{SVG}title").text == evil
    assert "&lt;b&gt;" in str(bar_chart([], label="l", empty="<b>nothing</b>"))


def test_empty_series_are_a_sentence_not_a_frame():
    for chart in (bar_chart([], label="l", empty="No readings yet."),
                  bar_chart([Bar("a", None), Bar("b", D(0))], label="l", empty="No readings yet."),
                  line_chart([], label="l", empty="No readings yet.")):
        assert str(chart) == '<p class="chart-empty">No readings yet.</p>'


def test_line_goes_through_its_points_and_marks_stay_in_range():
    svg = parse(line_chart([Point(10, D(5)), Point(0, D(0)), Point(20, D(10))], label="Balance", empty="e",
                           ticks=[Tick(0, "1 Nov"), Tick(99, "later")], marks=[Mark(10, "top-up"), Mark(-5, "old")],
                           x_range=(0, 20)))
    points = [tuple(map(float, p.split(","))) for p in svg.find(f"{SVG}polyline").get("points").split()]
    assert [x for x, _ in points] == sorted(x for x, _ in points)  # in x order, whatever the input order
    assert points[0][1] > points[1][1] > points[2][1]  # higher balance, higher on the screen
    assert len(svg.findall(f"{SVG}path")) == 1  # the mark before the range is left out
    assert [t.text for t in svg.findall(f"{SVG}text") if re.search(r"[a-z]", t.text)] == ["1 Nov"]  # not "later"
    one = parse(line_chart([Point(0, D(3))], label="l", empty="e"))
    assert one.find(f"{SVG}circle") is not None  # one reading: a dot


def test_values_are_written_above_the_bars_only_when_asked():
    """A 30-day chart with a number over every bar is unreadable on a phone (seen in the demo)."""
    bars = [Bar(str(day), D("135.0355")) for day in range(30)]
    plain_texts = [t.text for t in parse(bar_chart(bars, label="Use", empty="none")).findall(f"{SVG}text")]
    assert "135.0355" not in plain_texts and not any(text and "135" in text for text in plain_texts)
    asked = [t.text for t in parse(bar_chart(bars[:3], label="Use", empty="none", values=True)).findall(f"{SVG}text")]
    assert sum(1 for text in asked if text and text.startswith("135")) == 3
