"""Charts for the reports: Vega-Lite specifications rendered to SVG offline by vl-convert.

Every chart has titled axes and its values written on the marks; time axes list every month between
the first and the last (an empty month is a zero, not a gap); a chart whose data are all zero is not
drawn at all (the function returns None and the page says so in words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from events.money import format_cents

WIDTH = 520
HEIGHT = 220
FONT = "DejaVu Sans, Liberation Sans, Arial, sans-serif"
COLOURS = ["#0969da", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#cf222e"]


def months_between(first: date, last: date) -> list[date]:
    out, m = [], first.replace(day=1)
    while m <= last:
        out.append(m)
        m = date(m.year + (m.month == 12), m.month % 12 + 1, 1)
    return out


def _render(spec: dict[str, Any]) -> str:
    import vl_convert

    base = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": WIDTH, "height": HEIGHT, "background": "white",
        "config": {"font": FONT, "axis": {"labelFontSize": 11, "titleFontSize": 12},
                   "legend": {"labelFontSize": 11, "titleFontSize": 12}, "title": {"fontSize": 14}},
    }
    svg: str = vl_convert.vegalite_to_svg({**base, **spec})
    return svg


def _dollars(cents: int) -> float:
    # Vega-Lite positions marks with numbers; the labels printed come from format_cents (exact)
    return cents / 100


def monthly_series(title: str, series: Mapping[str, Mapping[date, int]], *, y_title: str = "dollars",
                   chart_id: str = "chart") -> str | None:
    """Grouped bars per month: ``series`` is {name: {month: cents}}; every month from the first to the
    last is on the axis."""
    months = sorted({m for values in series.values() for m in values})
    if not months or not any(v for values in series.values() for v in values.values()):
        return None
    axis = months_between(months[0], months[-1])
    rows = [{"month": f"{m:%Y-%m}", "series": name, "value": _dollars(values.get(m, 0)),
             "label": format_cents(values[m]) if values.get(m) else ""}
            for name, values in series.items() for m in axis]
    names = list(series)
    spec = {
        "title": title, "description": chart_id,
        "data": {"values": rows},
        "encoding": {
            "x": {"field": "month", "type": "ordinal", "sort": [f"{m:%Y-%m}" for m in axis],
                  "title": "coverage month", "axis": {"labelAngle": -40}},
            "xOffset": {"field": "series", "sort": names},
            "y": {"field": "value", "type": "quantitative", "title": y_title, "axis": {"format": "$,.0f"}},
            "color": {"field": "series", "title": None, "sort": names,
                      "scale": {"domain": names, "range": COLOURS[: len(names)]}, "legend": {"orient": "top"}},
        },
        "layer": [
            {"mark": {"type": "bar"}},
            # values written along each bar, inside it from its top, so a year of months stays readable
            {"mark": {"type": "text", "angle": 270, "align": "right", "baseline": "middle", "dx": -4,
                      "fontSize": 9} if len(axis) > 4 else
             {"type": "text", "dy": -4, "fontSize": 9, "baseline": "bottom"},
             "encoding": {"text": {"field": "label"}, "color": {"value": "white" if len(axis) > 4 else "#1b1f23"}}},
        ],
    }
    return _render(spec)


def balance_line(title: str, balances: Mapping[date, int], *, chart_id: str = "balance") -> str | None:
    """The running balance by coverage month (what is owed after each month), every month on the axis."""
    if not balances or not any(balances.values()):
        return None
    axis = months_between(min(balances), max(balances))
    running, rows = 0, []
    for m in axis:
        running += balances.get(m, 0)
        rows.append({"month": f"{m:%Y-%m}", "value": _dollars(running), "label": format_cents(running)})
    spec = {
        "title": title, "description": chart_id,
        "data": {"values": rows},
        "encoding": {
            "x": {"field": "month", "type": "ordinal", "sort": [r["month"] for r in rows], "title": "coverage month",
                  "axis": {"labelAngle": -40}},
            "y": {"field": "value", "type": "quantitative", "title": "balance due (dollars)",
                  "axis": {"format": "$,.0f"}},
        },
        "layer": [
            {"mark": {"type": "line", "point": True, "color": COLOURS[0]}},
            {"mark": {"type": "text", "dy": -8, "fontSize": 8}, "encoding": {"text": {"field": "label"}}},
        ],
    }
    return _render(spec)


def category_bars(title: str, counts: Mapping[str, int], *, x_title: str, money: bool = False,
                  chart_id: str = "categories") -> str | None:
    """Horizontal bars, one per category, its value written at its end."""
    if not counts or not any(counts.values()):
        return None
    rows = [{"category": k, "value": _dollars(v) if money else v, "label": format_cents(v) if money else str(v)}
            for k, v in counts.items()]
    spec = {
        "title": title, "description": chart_id, "height": max(60, 22 * len(rows)),
        "data": {"values": rows},
        "encoding": {
            "y": {"field": "category", "type": "nominal", "sort": list(counts), "title": None},
            "x": {"field": "value", "type": "quantitative", "title": x_title,
                  "axis": {"format": "$,.0f" if money else "d", "tickMinStep": 1}},
        },
        "layer": [
            {"mark": {"type": "bar", "color": COLOURS[0]}},
            {"mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 10},
             "encoding": {"text": {"field": "label"}}},
        ],
    }
    return _render(spec)


def stacked_aging(title: str, rows: Mapping[str, Mapping[str, int]], buckets: Sequence[str], *,
                  chart_id: str = "aging") -> str | None:
    """Outstanding per payer (or member) stacked by aging bucket, the total written at the end."""
    data = [{"who": who, "bucket": b, "value": _dollars(values.get(b, 0)), "label": format_cents(values.get(b, 0))}
            for who, values in rows.items() for b in buckets if values.get(b, 0) > 0]
    if not data:
        return None
    totals = [{"who": who, "total": _dollars(sum(max(values.get(b, 0), 0) for b in buckets)),
               "label": format_cents(sum(max(values.get(b, 0), 0) for b in buckets))}
              for who, values in rows.items() if any(values.get(b, 0) > 0 for b in buckets)]
    spec = {
        "title": title, "description": chart_id, "height": max(60, 24 * len(totals)),
        "layer": [
            {"data": {"values": data}, "mark": "bar",
             "encoding": {
                 "y": {"field": "who", "type": "nominal", "title": None, "sort": [t["who"] for t in totals]},
                 "x": {"field": "value", "type": "quantitative", "stack": "zero", "title": "outstanding (dollars)",
                       "axis": {"format": "$,.0f"}},
                 "color": {"field": "bucket", "title": "days past due", "sort": list(buckets),
                           "scale": {"domain": list(buckets), "range": COLOURS[: len(buckets)]},
                           "legend": {"orient": "top"}},
                 "order": {"field": "bucket"},
             }},
            {"data": {"values": totals}, "mark": {"type": "text", "align": "left", "dx": 4, "fontSize": 10},
             "encoding": {"y": {"field": "who", "type": "nominal", "sort": [t["who"] for t in totals]},
                          "x": {"field": "total", "type": "quantitative"}, "text": {"field": "label"}}},
        ],
    }
    return _render(spec)
