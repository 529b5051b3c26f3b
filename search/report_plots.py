"""The plots of `archdsl report` as inline SVG: the Pareto plot and the predictor scatter, with round ticks.

Takes: a RunState (search/run_state.py) and its records. Returns: SVG text (hover titles on every point, links to
its row of the page); `predictor_stats` / `spearman` give the predictor's accuracy figures and `predictor_words`
says them in words; `clean_svg` makes a Graphviz SVG safe to inline. Hand-made rather than matplotlib so that
every point can carry its own title and link; the numbers are HTML-escaped here.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from .pareto import latency_axis, pareto_front
from .run_state import _num

if TYPE_CHECKING:
    from .run_state import RunState


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _score(value: Any) -> str:
    v = _num(value)
    return "–" if v is None else (f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) whose range covers [lo, hi]."""
    if not hi > lo:
        lo, hi = (lo - 1, hi + 1) if lo == 0 else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks of a log axis whose range covers [lo, hi] (lo > 0)."""
    ticks: list[float] = []
    e = math.floor(math.log10(lo))
    while not ticks or ticks[-1] < hi:
        for m in (1, 2, 5):
            t = round(m * 10.0 ** e, 12)
            if t * 2.5 > lo and (not ticks or ticks[-1] < hi):
                ticks.append(t)
        e += 1
    return ticks


def _tick_text(t: float) -> str:
    text = f"{t:,.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


class _Plot:
    """One SVG scatter plot: data -> pixels (x linear or log), a grid with round ticks, axis labels and a legend
    on the right."""

    def __init__(self, xr: tuple[float, float], yr: tuple[float, float], xlabel: str, ylabel: str, *,
                 xlog: bool = False, size: tuple[int, int] = (1100, 400), legend_width: int = 210):
        self.xlog = xlog
        self.xt, self.yt = (_log_ticks(*xr) if xlog else _ticks(*xr)), _ticks(*yr)
        self.xlabel, self.ylabel = xlabel, ylabel
        self.W, self.H = size
        self.L, self.R, self.T, self.B = 70, legend_width, 18, 48  # margins in px; the right one holds the legend
        self.legend: list[tuple[str, str, str]] = []  # (marker, css class, text)

    def x(self, v: float) -> float:
        a, b = self.xt[0], self.xt[-1]
        if self.xlog:
            a, b, v = math.log10(a), math.log10(b), math.log10(max(v, self.xt[0]))
        return round(self.L + (v - a) / (b - a) * (self.W - self.L - self.R), 2)

    def y(self, v: float) -> float:
        a, b = self.yt[0], self.yt[-1]
        return round(self.H - self.B - (v - a) / (b - a) * (self.H - self.T - self.B), 2)

    def frame(self) -> list[str]:
        out = []
        x0, x1, y0, y1 = self.L, self.W - self.R, self.H - self.B, self.T
        for t in self.xt:
            out.append(f'<line class="grid" x1="{self.x(t)}" y1="{y0}" x2="{self.x(t)}" y2="{y1}"/>'
                       f'<text x="{self.x(t)}" y="{y0 + 16}" text-anchor="middle">{_tick_text(t)}</text>')
        for t in self.yt:
            out.append(f'<line class="grid" x1="{x0}" y1="{self.y(t)}" x2="{x1}" y2="{self.y(t)}"/>'
                       f'<text x="{x0 - 6}" y="{self.y(t) + 4}" text-anchor="end">{_tick_text(t)}</text>')
        out.append(f'<rect class="axes" x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}"/>')
        xlabel = self.xlabel + (", log scale" if self.xlog else "")
        out.append(f'<text class="label" x="{(x0 + x1) / 2}" y="{self.H - 8}" text-anchor="middle">'
                   f'{esc(xlabel)}</text>')
        out.append(f'<text class="label" transform="translate(16 {(y0 + y1) / 2}) rotate(-90)" '
                   f'text-anchor="middle">{esc(self.ylabel)}</text>')
        return out

    @staticmethod
    def marker(kind: str, cls: str, x: float, y: float, title: str, href: str | None = None) -> str:
        tip = f"<title>{esc(title)}</title>"
        if kind == "circle":
            shape = f'<circle class="{cls}" cx="{x}" cy="{y}" r="4.5">{tip}</circle>'
        elif kind == "star":
            ang = [math.pi * i / 5 for i in range(10)]
            pts = " ".join(f"{round(x + r * math.sin(a), 2)},{round(y - r * math.cos(a), 2)}"
                           for a, r in zip(ang, [7, 3] * 5))
            shape = f'<polygon class="{cls}" points="{pts}">{tip}</polygon>'
        else:  # "x" or "+", drawn as one path
            d = 4
            lines = (f"M{x - d} {y - d}L{x + d} {y + d}M{x - d} {y + d}L{x + d} {y - d}" if kind == "x"
                     else f"M{x - d - 1} {y}L{x + d + 1} {y}M{x} {y - d - 1}L{x} {y + d + 1}")
            shape = f'<path class="{cls}" d="{lines}">{tip}</path>'
        return f'<a href="{esc(href)}">{shape}</a>' if href else shape

    def svg(self, body: list[str], ident: str, label: str) -> str:
        legend = []
        lx, ly = self.W - self.R + 18, self.T + 10
        for i, (kind, cls, text) in enumerate(self.legend):
            y = ly + 20 * i
            if kind == "line":
                legend.append(f'<line class="{cls}" x1="{lx - 6}" y1="{y}" x2="{lx + 8}" y2="{y}"/>')
            else:
                legend.append(self.marker(kind, cls, lx + 1, y, text))
            legend.append(f'<text x="{lx + 16}" y="{y + 4}">{esc(text)}</text>')
        return (f'<svg id="{ident}" class="plot" role="img" aria-label="{esc(label)}" '
                f'viewBox="0 0 {self.W} {self.H}" width="{self.W}" height="{self.H}" '
                f'xmlns="http://www.w3.org/2000/svg">{"".join(self.frame() + body + legend)}</svg>')


# ------------------------------------------------------------------------------------------------ the plots

def pareto_svg(st: RunState) -> str:
    """Score vs measured latency: every scored trial, the Pareto front (within the budget) as a step line, trials
    over budget in grey (at the predicted latency when only predicted; along the bottom when never scored) and the
    budget as a dashed red line. Each point's tooltip names its trial and links to its row."""

    metric, budget = st.metric, st.budget
    scored, unscored = [], []  # (latency, score, record, kind, css class)
    for r in st.records:
        status = r.get("status")
        lat = _num(r.get("predicted_ms")) if status == "predicted_over_budget" else _num(r.get("latency_ms"))
        if status not in ("ok", "over_budget", "predicted_over_budget") or lat is None:
            continue
        kind, cls = {"ok": ("circle", "pt-ok"), "over_budget": ("x", "pt-over")}.get(status, ("+", "pt-pred"))
        s = _num(r.get(metric))
        (scored if s is not None else unscored).append((lat, s, r, kind, cls))
    front = pareto_front(st.records, budget_ms=budget, metric=metric)
    bases = [(lat, s, b) for b in st.baselines if b.get("status") == "ok"
             and (lat := _num(b.get("latency_ms"))) is not None and (s := _num(b.get("score"))) is not None]
    lo, hi, xlog = latency_axis([p[0] for p in scored + unscored] + [b[0] for b in bases],
                                [p[0] for p in scored + unscored if p[2].get("status") == "ok"]
                                + [b[0] for b in bases], budget)
    scores = [p[1] for p in scored] + [b[1] for b in bases]
    pad = 0.06 * ((max(scores) - min(scores)) or abs(scores[0]) or 1.0) if scores else 0.0
    ylabel = ("validation accuracy" if st.settings.get("objective", "accuracy") == "accuracy"
              else f"{st.settings.get('objective', metric)} score (zero-cost proxy)")
    yr = (min(scores) - pad, max(scores) + pad) if scores else (0.0, 1.0)
    if ylabel == "validation accuracy":  # a fraction: the axis stays within [0, 1]
        yr = (max(0.0, yr[0]), min(1.0, yr[1]))
    plot = _Plot((lo / 1.25, hi * 1.25) if xlog else (0.0, hi * 1.05), yr, "latency (ms)", ylabel, xlog=xlog)
    xmax = plot.xt[-1]
    body = []
    if budget is not None:
        bx = plot.x(min(budget, xmax))
        body.append(f'<line class="budget" x1="{bx}" y1="{plot.T}" x2="{bx}" y2="{plot.H - plot.B}"/>'
                    f'<text class="budget-label" x="{bx + 4}" y="{plot.T + 12}">budget {budget:g} ms</text>')
    if len(front) > 1:
        pts = []
        for a, b in zip(front, front[1:]):
            pts += [(a["latency_ms"], a[metric]), (b["latency_ms"], a[metric])]
        pts.append((front[-1]["latency_ms"], front[-1][metric]))
        body.append('<polyline class="front-line" points="' +
                    " ".join(f"{plot.x(x)},{plot.y(y)}" for x, y in pts) + '"/>')
    front_ids = {id(r) for r in front}
    bottom = plot.H - plot.B - 7
    for lat, s, r, kind, cls in sorted(scored + unscored, key=lambda p: id(p[2]) in front_ids):
        shown = min(lat, xmax)
        which = "predicted" if r.get("status") == "predicted_over_budget" else "measured"
        who = "candidate" if r.get("trial") is None else f"trial {r.get('trial')}"
        tip = (f"{who} ({r.get('status')}): {metric} {_score(s)}, {which} {lat:.3f} ms"
               + (f", {r['params']:,} params" if isinstance(r.get("params"), int) else "")
               + (" (off the scale)" if lat > xmax else "") + ("" if s is not None else ", not scored"))
        if id(r) in front_ids:
            cls = "pt-front"
        body.append(plot.marker(kind, cls, plot.x(shown), plot.y(s) if s is not None else bottom, tip,
                                f"#{st.anchor(r)}"))
    for lat, s, b in bases:
        x, y = plot.x(min(lat, xmax)), plot.y(s)
        body.append(plot.marker("star", "pt-base", x, y, f"baseline {b.get('name')} (s={b.get('s'):.3g}): "
                                f"{metric} {_score(s)}, measured {lat:.3f} ms"))
        body.append(f'<text class="base-label" x="{x + 8}" y="{y + 12}">{esc(b.get("name"))}</text>')
    n_ok = sum(1 for p in scored if p[2].get("status") == "ok")
    plot.legend = [("circle", "pt-ok", f"trials ({n_ok})"), ("circle", "pt-front", f"Pareto front ({len(front)})")]
    for kind, cls, status, text in (("x", "pt-over", "over_budget", "over budget, measured"),
                                    ("+", "pt-pred", "predicted_over_budget", "over budget, predicted")):
        n = sum(1 for p in scored + unscored if p[2].get("status") == status)
        if n:
            plot.legend.append((kind, cls, f"{text} ({n})"))
    if bases:
        plot.legend.append(("star", "pt-base", f"baselines, scaled ({len(bases)})"))
    if budget is not None:
        plot.legend.append(("line", "budget", f"budget {budget:g} ms"))
    if not scored and not unscored:
        body.append(f'<text class="empty" x="{(plot.L + plot.W - plot.R) / 2}" y="{(plot.T + plot.H - plot.B) / 2}" '
                    'text-anchor="middle">no measured trials yet</text>')
    return plot.svg(body, "pareto", f"{ylabel} vs latency")


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their average rank
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None with fewer than 2 points or no spread."""
    if len(xs) < 2:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def predictor_stats(records: list[dict]) -> dict[str, Any]:
    """Predicted vs measured latency over the records that have both: n, MAE (ms), MAPE (%), Spearman's rho,
    the share within 10%, and the (predicted, measured, record) pairs."""
    pairs = [(p, m, r) for r in records
             if (p := _num(r.get("predicted_ms"))) is not None and (m := _num(r.get("latency_ms"))) and m > 0]
    if not pairs:
        return {"n": 0, "pairs": []}
    errs = [abs(p - m) for p, m, _ in pairs]
    rel = [abs(p - m) / m for p, m, _ in pairs]
    return {"n": len(pairs), "mae_ms": sum(errs) / len(errs), "mape_pct": 100 * sum(rel) / len(rel),
            "within_10pct": sum(e <= 0.10 + 1e-9 for e in rel) / len(rel),
            "spearman": spearman([p for p, _, _ in pairs], [m for _, m, _ in pairs]), "pairs": pairs}


def predictor_svg(st: RunState, pairs: list[tuple[float, float, dict]]) -> str:
    top = max(max(p, m) for p, m, _ in pairs) * 1.05
    plot = _Plot((0.0, top), (0.0, top), "predicted latency (ms)", "measured latency (ms)", size=(560, 360),
                 legend_width=150)
    end = min(plot.xt[-1], plot.yt[-1])
    body = [f'<line class="diag" x1="{plot.x(0)}" y1="{plot.y(0)}" x2="{plot.x(end)}" y2="{plot.y(end)}"/>']
    for p, m, r in pairs:
        body.append(plot.marker("circle", "pt-ok", plot.x(p), plot.y(m),
                                f"trial {r.get('trial')}: predicted {p:.3f} ms, measured {m:.3f} ms"
                                .replace("trial None", "candidate"),
                                f"#{st.anchor(r)}"))
    plot.legend = [("circle", "pt-ok", f"trials ({len(pairs)})"), ("line", "diag", "exact (y = x)")]
    return plot.svg(body, "predictor", "predicted vs measured latency")


_SVG_NS = "{http://www.w3.org/2000/svg}"
_UNSAFE = ("script", "foreignObject", "iframe", "object", "embed", "handler", "listener")


def clean_svg(text: str) -> str:
    """An SVG document as an element to inline in HTML: no XML prolog or doctype, no script, foreign content,
    event handler or outside link (only links to "#..." stay). Raises ValueError when it is not SVG
    (xml.etree.ElementTree.ParseError, a SyntaxError, when it is not XML)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    if root.tag != _SVG_NS + "svg":
        raise ValueError(f"not an SVG document (root element {root.tag!r})")
    for el in list(root.iter()):
        el.tag = el.tag[len(_SVG_NS):]  # plain names: the HTML parser puts <svg> and its children in SVG's namespace
        for child in list(el):
            if not isinstance(child.tag, str) or not child.tag.startswith(_SVG_NS) \
                    or child.tag[len(_SVG_NS):] in _UNSAFE:
                el.remove(child)
        for key in list(el.attrib):
            local = key.rsplit("}", 1)[-1]
            value = el.attrib.pop(key)
            if local.lower().startswith("on") or (local == "href" and not value.startswith("#")):
                continue
            if key.startswith("{") and local != "href":
                continue  # attributes of other namespaces (xml:space, ...) are not needed to draw
            el.attrib[local] = value
    root.set("xmlns", _SVG_NS[1:-1])
    return ET.tostring(root, encoding="unicode")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def predictor_words(info: dict) -> str:
    """summary.json's "predictor" ({n, covered, uncovered, scale, within_10pct, within_5pct}: search/predictor.py)
    in words: how many candidates it could predict, how many predictions met a measurement, and how close."""
    def num(key):
        v = info.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    covered, uncovered, n, scale = num("covered"), num("uncovered"), num("n"), num("scale")
    out = []
    if covered is not None and uncovered is not None:
        total = int(covered + uncovered)
        if not covered:
            out.append(f"During the search the latency predictor predicted none of the {_count(total, 'candidate')}: "
                       "the per-operator latency table (archdsl bench --build-table SPACE.arch) lacked layers of "
                       "each, so every candidate was built and measured and none was discarded unbuilt.")
        else:
            out.append(f"During the search the latency predictor predicted {covered} of the "
                       f"{_count(total, 'candidate')} before building them (the per-operator latency table "
                       f"covered every layer of those; the other {uncovered} lacked some and were measured "
                       "without a prediction).")
    if n is not None and (n or covered):
        if n:
            near = [f"{100 * v:.0f}% within {pct}" for key, pct in (("within_10pct", "10%"), ("within_5pct", "5%"))
                    if (v := num(key)) is not None]
            out.append(f"{_count(int(n), 'prediction')} {'was' if n == 1 else 'were'} compared with the latency "
                       f"measured afterwards" + (f": {', '.join(near)}." if near else "."))
        else:
            out.append("No prediction was followed by a measurement (the candidates it predicted were discarded "
                       "as far over budget).")
    if scale is not None and covered:
        out.append(f"Predictions were the sum of the table's layer times x {scale:.3g} (the median ratio of "
                   "measured to summed latency, fitted once 3 predicted candidates were measured; 1 before).")
    known = {"covered", "uncovered", "n", "scale", "within_10pct", "within_5pct"}
    rest = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
                     if k not in known)
    return " ".join(out + ([f"Also recorded: {rest}."] if rest else [])) or "The latency predictor was not used."
