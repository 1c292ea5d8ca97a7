"""Small charts as inline SVG, drawn on the server: bars and a line, with axes and labels. No script
(the dashboard's CSP allows none) and no inline style (nor that): colours come from classes in
admin.css. The viewBox is phone-sized, so on a phone the text keeps about its own size and on a wide
screen the chart scales up. Every text is escaped; no data at all is a sentence, never an empty frame.

Values are exact (Decimal); they become floats only as pixel positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 12, 30  # room for the y labels and the x labels
FONT = 11
STEPS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (shown every `label_every` bars)
    value: Decimal | None  # None: no data for this bar (a gap, not a zero)
    title: str = ""  # the tooltip; defaults to "label: value"
    kind: str = ""  # a class (e.g. applied, failed) for its colour


@dataclass(frozen=True)
class Point:
    x: float  # any increasing scale (e.g. seconds); the ticks say what it means
    y: Decimal


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Mark:
    """An event on a line chart's x axis (a top-up), with its tooltip."""

    x: float
    title: str


def plain(value: Decimal) -> str:
    """1250 → 1,250; 2.5 → 2.5: axis labels, no trailing zeros."""
    text = f"{value.normalize():,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def compact(value: Decimal) -> str:
    """Axis labels that fit 40 pixels: 1,500 → 1.5k, 2,000,000 → 2M."""
    for size, suffix in ((Decimal(1_000_000), "M"), (Decimal(1000), "k")):
        if abs(value) >= size:
            return plain(value / size) + suffix
    return plain(value)


def nice_scale(low: Decimal, high: Decimal, *, ticks: int = 4) -> list[Decimal]:
    """Round tick values covering [low, high] (from 0 when all are positive): 1, 2, 2.5 or 5 times 10^k apart."""
    low, high = min(low, Decimal(0)), max(high, Decimal(0))
    if high == low:
        high = low + 1
    raw = (high - low) / ticks
    magnitude = Decimal(10) ** raw.adjusted()
    step = next(s * magnitude for s in STEPS if s * magnitude >= raw)
    start = (low / step).to_integral_value(rounding="ROUND_FLOOR") * step
    values = [start]
    while values[-1] < high:
        values.append(values[-1] + step)
    return values


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, text: str, *, anchor: str = "middle", cls: str = "label") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{FONT}" class="{cls}">'
            f"{escape(text)}</text>")


def empty_chart(message: str) -> Markup:
    return Markup(f'<p class="chart-empty">{escape(message)}</p>')


class _Frame:
    """The plot area and the y axis: gridlines and labels for the scale's ticks."""

    def __init__(self, scale: list[Decimal], fmt: Callable[[Decimal], str]) -> None:
        self.low, self.high = scale[0], scale[-1]
        self.scale, self.fmt = scale, fmt
        self.x0, self.x1 = LEFT, WIDTH - RIGHT
        self.y0, self.y1 = HEIGHT - BOTTOM, TOP  # y0: the bottom (the scale's low)

    def y(self, value: Decimal) -> float:
        return self.y0 - float((value - self.low) / (self.high - self.low)) * (self.y0 - self.y1)

    def axes(self) -> list[str]:
        parts = []
        for value in self.scale:
            y = self.y(value)
            parts.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{_n(y)}" y2="{_n(y)}" class="grid"/>')
            parts.append(_text(self.x0 - 4, y + FONT / 3, self.fmt(value), anchor="end"))
        zero = self.y(Decimal(0))
        parts.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{_n(zero)}" y2="{_n(zero)}" class="axis"/>')
        return parts


def _svg(label: str, parts: list[str], cls: str) -> Markup:
    title = escape(label)
    return Markup(f'<svg class="chart {cls}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
                  f'aria-label="{title}" xmlns="http://www.w3.org/2000/svg"><title>{title}</title>'
                  + "".join(parts) + "</svg>")


def bar_chart(bars: Sequence[Bar], *, label: str, empty: str, unit: str = "",
              fmt: Callable[[Decimal], str] = compact, label_every: int = 1, values: bool = False) -> Markup:
    """Vertical bars, one a category or a day (`values`: each bar's value written above it). All None or
    zero is `empty`: nothing happened."""
    numbers = [bar.value for bar in bars if bar.value is not None]  # not `values`: that flag is the caller's
    if not any(numbers):
        return empty_chart(empty)
    frame = _Frame(nice_scale(min(numbers), max(numbers)), fmt)
    parts = frame.axes()
    slot = (frame.x1 - frame.x0) / len(bars)
    width = max(1.0, slot * 0.72)
    for i, bar in enumerate(bars):
        x = frame.x0 + i * slot + (slot - width) / 2
        if bar.value is not None:
            top, base = sorted((frame.y(bar.value), frame.y(Decimal(0))))
            tip = bar.title or f"{bar.label}: {plain(bar.value)}{' ' + unit if unit else ''}"
            parts.append(f'<rect x="{_n(x)}" y="{_n(top)}" width="{_n(width)}" height="{_n(max(base - top, 0.5))}" '
                         f'class="bar {escape(bar.kind)}"><title>{escape(tip)}</title></rect>')
            if values:
                parts.append(_text(x + width / 2, top - 3, fmt(bar.value), cls="value"))
        if i % label_every == 0:
            parts.append(_text(x + width / 2, HEIGHT - BOTTOM + FONT + 4, bar.label))
    return _svg(label, parts, "bars")


def line_chart(points: Sequence[Point], *, label: str, empty: str, ticks: Sequence[Tick] = (),
               marks: Sequence[Mark] = (), x_range: tuple[float, float] | None = None,
               fmt: Callable[[Decimal], str] = compact) -> Markup:
    """A line through the points (in x order), with x ticks and event marks along the bottom."""
    if not points:
        return empty_chart(empty)
    ordered = sorted(points, key=lambda p: p.x)
    frame = _Frame(nice_scale(min(p.y for p in ordered), max(p.y for p in ordered)), fmt)
    first, last = x_range or (ordered[0].x, ordered[-1].x)
    span = (last - first) or 1.0

    def x(value: float) -> float:
        return frame.x0 + (value - first) / span * (frame.x1 - frame.x0)

    parts = frame.axes()
    path = " ".join(f"{_n(x(p.x))},{_n(frame.y(p.y))}" for p in ordered)
    parts.append(f'<polyline points="{path}" class="line" fill="none"/>')
    if len(ordered) == 1:  # one reading: a dot, since a line needs two
        parts.append(f'<circle cx="{_n(x(ordered[0].x))}" cy="{_n(frame.y(ordered[0].y))}" r="3" class="dot"/>')
    for mark in marks:
        if first <= mark.x <= last:
            mx = x(mark.x)
            parts.append(f'<path d="M{_n(mx)},{_n(frame.y0)} l-5,9 h10 z" class="mark">'
                         f"<title>{escape(mark.title)}</title></path>")
    for tick in ticks:
        if first <= tick.x <= last:
            parts.append(_text(x(tick.x), HEIGHT - BOTTOM + FONT + 12, tick.label))
    return _svg(label, parts, "line-chart")
