"""Training curves as an SVG picture: loss per step, and the validation metric per evaluation.

Reads a training record's ``train_losses`` and ``evaluations`` (``training.json``); writes nothing. Hand-drawn SVG
(no plotting library to install): the run page shows it as an image (``tasks/artifacts.py``), and any browser opens it.
"""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 380, 260  # one panel; the picture is one or two panels wide
MARGIN = {"left": 56, "right": 14, "top": 30, "bottom": 40}
MAX_POINTS = 400  # a long run's curve is thinned to this many points per line (the ends always kept)
COLORS = {"train": "#2563eb", "validation": "#ea580c", "metric": "#16a34a"}


def training_curves_svg(train_losses: list[dict], evaluations: list[dict], metric: str) -> str | None:
    """One panel of the losses (training per step, validation per evaluation) and, when the validation split was
    scored, one of ``metric`` per evaluation; None when there is nothing to draw."""
    train = points(train_losses, "loss")
    validation = points(evaluations, "loss")
    scores = points(evaluations, metric)
    panels = []
    if train or validation:
        panels.append(panel("loss", [("training", train, COLORS["train"]),
                                     ("validation", validation, COLORS["validation"])]))
    if scores:
        panels.append(panel(f"validation {metric}", [(metric, scores, COLORS["metric"])]))
    if not panels:
        return None
    width = WIDTH * len(panels)
    body = "".join(f'<g transform="translate({WIDTH * i},0)">{p}</g>' for i, p in enumerate(panels))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
            f'viewBox="0 0 {width} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="11">'
            f'<rect width="{width}" height="{HEIGHT}" fill="#ffffff"/>{body}</svg>')


def points(history: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) pairs with a finite value, thinned to ``MAX_POINTS``."""
    found = [(float(h["step"]), float(h[key])) for h in history
             if isinstance(h.get(key), (int, float)) and math.isfinite(h[key]) and h.get("step") is not None]
    if len(found) <= MAX_POINTS:
        return found
    every = math.ceil(len(found) / MAX_POINTS)
    return found[::every] + ([found[-1]] if (len(found) - 1) % every else [])


def panel(title: str, lines: list[tuple[str, list, str]]) -> str:
    """Axes with ticks, a title, one polyline (and dots) per series, and a legend."""
    drawn = [(label, series, color) for label, series, color in lines if series]
    xs = [x for _, series, _ in drawn for x, _ in series]
    ys = [y for _, series, _ in drawn for _, y in series]
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    scale_x = axis(x_ticks[0], x_ticks[-1], MARGIN["left"], WIDTH - MARGIN["right"])
    scale_y = axis(y_ticks[0], y_ticks[-1], HEIGHT - MARGIN["bottom"], MARGIN["top"])
    left, right, top, bottom = MARGIN["left"], WIDTH - MARGIN["right"], MARGIN["top"], HEIGHT - MARGIN["bottom"]
    parts = [f'<text x="{left}" y="{top - 12}" font-size="13" font-weight="bold" fill="#111827">{escape(title)}'
             f'</text>']
    for tick in y_ticks:
        y = scale_y(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#374151">{label(tick)}</text>')
    for tick in x_ticks:
        x = scale_x(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#6b7280"/>'
                     f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#374151">{label(tick)}</text>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#6b7280"/>'
                 f'<text x="{(left + right) / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" fill="#374151">step'
                 f'</text>')
    for i, (name, series, color) in enumerate(drawn):
        coordinates = " ".join(f"{scale_x(x):.1f},{scale_y(y):.1f}" for x, y in series)
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(series) <= 60:  # evaluations are few: mark each
            parts += [f'<circle cx="{scale_x(x):.1f}" cy="{scale_y(y):.1f}" r="2.5" fill="{color}"/>'
                      for x, y in series]
        if len(drawn) > 1:  # a legend in the title row; one line needs none (the title names it)
            legend_x = right - 80 * (len(drawn) - i)
            parts.append(f'<rect x="{legend_x}" y="{top - 18}" width="12" height="3" fill="{color}"/>'
                         f'<text x="{legend_x + 16}" y="{top - 13}" fill="#111827">{escape(name)}</text>')
    return "".join(parts)


def axis(low: float, high: float, start: float, end: float):
    """A linear map from [low, high] to pixels [start, end]."""
    span = (high - low) or 1.0
    return lambda value: start + (value - low) / span * (end - start)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if high == low:
        low, high = low - (abs(low) or 1) * 0.05, high + (abs(high) or 1) * 0.05
    raw = (high - low) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(ticks[-1] + step)
    return [round(t, 12) for t in ticks]


def label(value: float) -> str:
    """A tick label: integers plainly, else up to 4 significant digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"
