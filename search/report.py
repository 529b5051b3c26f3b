"""`archdsl report RUN_DIR -o report.html`: one self-contained HTML page for a finished or running search.

Takes: a search output directory (search/records.py's files, plus what search/driver.py writes when a search ends:
summary.json and top/<rank>_<hash>.arch). It is only read: the lock is never taken, nothing there is written, and
a search still appending records is fine (a partial last line is left out and the page says so; corrupt lines are
listed, not fatal).
Returns: the page as HTML text (`build_report`), written to a file by `archdsl report` (`add_report_parser`).
The page shows the Pareto plot (score vs measured latency, the budget line, the front), the top architectures
(links to their .arch files, their graphs rendered by archdsl.viz when Graphviz is installed), trial status
counts, how the latency predictor's estimates compared with the measurements, the fingerprints of the measuring
machines, the settings, and the failures. Inline CSS and SVG only: no script, no external URL (its
Content-Security-Policy forbids both). Every text that comes from the directory is HTML-escaped.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import sys
import urllib.parse
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .records import CSV_NAME, LOCK, RUN_JSON, TRIALS, measurement_counts, measurement_text
from .report_plots import (
    _count,
    _num,
    _score,
    clean_svg,
    esc,
    pareto_svg,
    predictor_stats,
    predictor_svg,
    predictor_words,
)
from .run_state import FINISHED, STATUSES, SUMMARY, ReportError, RunState, read_run

__all__ = ["ReportError", "RunState", "read_run", "build_report", "add_report_parser", "cmd_report"]

_PROTECTED = (RUN_JSON, TRIALS, CSV_NAME, LOCK, SUMMARY, "pareto.json", "pareto.png", "trials.corrupt.jsonl")


# ------------------------------------------------------------------------------------------------ formatting

def _f(value: Any, spec: str = ".3f", none: str = "–") -> str:
    v = _num(value)
    return none if v is None else format(v, spec)


def _int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "–"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else "–" if value is None else json.dumps(value)


def _href(target: Path, base: Path) -> str:
    rel = os.path.relpath(target.resolve(), base.resolve())
    return urllib.parse.quote(Path(rel).as_posix())


# ------------------------------------------------------------------------------------------------ graphs

def _graph(st: RunState, rec: dict, title: str, id_prefix: str) -> tuple[str | None, str]:
    """(inline SVG, "") of the record's architecture, or (None, why not). From its top/*.arch file, or, while a
    search still runs, from the spec and the record's choice values when the spec is found unchanged."""
    from ..api import check_file
    from ..errors import ArchError

    f = st.top_files.get(str(rec.get("hash")))
    try:
        if f is not None:
            graph = check_file(f)
        else:
            spec = Path(str(st.settings.get("spec", "")))
            if not spec.is_file() or hashlib.sha256(spec.read_bytes()).hexdigest() != st.settings.get("spec_sha256"):
                return None, "no .arch file for it, and the search's spec is not found unchanged here"
            shape = st.settings.get("input_shape")
            graph = check_file(spec, {**(st.settings.get("fixed") or {}), **(rec.get("point") or {})},
                               input_shape=tuple(shape) if shape else None, model=st.settings.get("model"),
                               strict_overrides=False)  # as the trials did: a choice its branch skips is unused
    except ArchError as err:
        return None, "the architecture does not check: " + str(err).strip().splitlines()[0]
    except OSError as err:
        return None, f"cannot read it: {err.strerror or err}"
    except Exception as err:  # noqa: BLE001 - e.g. a value the record holds that the spec no longer takes
        return None, f"{type(err).__name__}: {err}"
    try:
        viz = importlib.import_module("archdsl.viz")  # by name: a separate module, maybe not installed yet
    except ImportError as err:
        return None, f"archdsl.viz is not available ({err})"
    try:
        # several drawings share the page: their element ids must not collide
        known = inspect.signature(viz.to_svg).parameters
        kw = {k: v for k, v in (("title", title), ("id_prefix", id_prefix)) if k in known}
        return clean_svg(viz.to_svg(graph, **kw)), ""
    except getattr(viz, "VizUnavailable", RuntimeError) as err:
        return None, str(err) or type(err).__name__
    except Exception as err:  # noqa: BLE001 - one graph that does not render must not cost the whole page
        return None, f"{type(err).__name__}: {err}"


# ------------------------------------------------------------------------------------------------ the page

def _table(head: list[str], rows: list, cls: str = "", ident: str = "") -> str:
    """A table from cells that are already HTML. A row is a list of cells, or (tr attributes, cells); head names
    ending in '#' are right-aligned numbers."""
    nums = [h.endswith("#") for h in head]
    th = "".join(f'<th{" class=num" if n else ""}>{esc(h.rstrip("#"))}</th>' for h, n in zip(head, nums))
    body = []
    for row in rows:
        attrs, cells = row if isinstance(row, tuple) else ("", row)
        tds = "".join(f'<td{" class=num" if n else ""}>{c}</td>' for c, n in zip(cells, nums))
        body.append(f"<tr{attrs}>{tds}</tr>")
    return (f'<table{f" id={ident}" if ident else ""}{f" class={cls}" if cls else ""}><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _point(point: Any) -> str:
    if not isinstance(point, dict) or not point:
        return "–"
    return '<dl class="point">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(_value(v))}</dd>"
                                           for k, v in point.items()) + "</dl>"


def _section_top(st: RunState, base: Path, top: int) -> str:
    from .pareto import top_k

    budget = st.budget
    ranked = top_k(st.records, top, budget, metric=st.metric)
    if not ranked:
        return ('<section id="top-section"><h2>Top architectures</h2><p class="muted">No architecture has met '
                f'the budget{" yet" if st.state == "running" else ""}.</p></section>')
    acc_col = st.metric == "score" and st.settings.get("objective", "accuracy") != "accuracy" \
        and any(_num(r.get("accuracy")) is not None for r in ranked)  # a proxy search whose trials were trained
    head = ["rank#", "trial#", "status", f"{'score' if st.metric == 'score' else 'accuracy'}#"]
    head += ["accuracy#"] if acc_col else []
    head += ["latency ms#", "predicted ms#", "params#", "MACs#", "choices", ".arch file"]
    rows, graphs = [], []
    for rank, r in enumerate(ranked, 1):
        f = st.top_files.get(str(r.get("hash")))
        link = (f'<a href="{esc(_href(f, base))}">{esc(f.name)}</a>' if f is not None
                else '<span class="muted">not written' + (" yet" if st.state == "running" else "") + "</span>")
        row = [str(rank), f'<a href="#{st.anchor(r)}">{esc(r.get("trial"))}</a>',
               esc(r.get("status")), _score(r.get(st.metric))]
        row += [_score(r.get("accuracy"))] if acc_col else []
        row += [_f(r.get("latency_ms")), _f(r.get("predicted_ms")), _int(r.get("params")), _int(r.get("macs")),
                _point(r.get("point")), link]
        rows.append((f' id="rank-{rank}"', row))
        name = f.name if f is not None else f"trial {r.get('trial')}"
        svg, why = _graph(st, r, f"rank {rank}: {name}", f"g{rank}-")
        inner = f'<div class="graph">{svg}</div>' if svg else f'<p class="muted">graph unavailable: {esc(why)}</p>'
        graphs.append(f'<details class="graph-box" id="graph-{rank}"><summary>rank {rank}: trial '
                      f'{esc(r.get("trial"))}, {esc(f.name if f else r.get("hash"))}</summary>{inner}</details>')
    return ('<section id="top-section"><h2>Top architectures</h2><p class="muted">Ranked by '
            f'{esc(st.metric)} among the trials measured within the budget (one per network).</p>'
            f'{_table(head, rows, "top", "top")}<h3>Rendered graphs</h3>{"".join(graphs)}</section>')


def _section_baselines(st: RunState, base: Path) -> str:
    """Each hand-designed baseline scaled to the budget: its knob, measured latency, size and score, against the
    search's best under the budget."""
    if not st.baselines:
        return ""
    from .pareto import best_under_budget

    best = best_under_budget(st.records, st.budget, metric=st.metric)
    top = _num(best.get(st.metric)) if best else None
    rows = []
    for b in st.baselines:
        score = _num(b.get("score"))
        margin = "–" if score is None or top is None else f"{top - score:+.4f}"
        arch = (f'<a href="{esc(_href(Path(b["arch"]), base))}">{esc(Path(b["arch"]).name)}</a>'
                if b.get("arch") else "–")
        rows.append([esc(b.get("name")), esc(b.get("status")), _f(b.get("s"), ".3g"), _f(b.get("latency_ms")),
                     _int(b.get("params")), _int(b.get("macs")), _f(score, ".4f"), margin, arch])
    return ('<section id="baselines"><h2>Baselines at the budget</h2>'
            + _table(["baseline", "status", "s", "latency ms", "params", "MACs", st.metric, "best - baseline",
                      "scaled spec"], rows)
            + '<p class="muted">Each hand-designed spec is scaled by its knob s (pycls compound scaling) to the '
            "largest s whose measured latency fits the budget, then trained with the trials' recipe.</p></section>")


def _section_counts(st: RunState) -> str:
    counts = Counter(str(r.get("status")) for r in st.records)
    names = list(STATUSES) + sorted(s for s in counts if s not in STATUSES)
    rows_data = [(s, counts.get(s, 0), STATUSES.get(s, "")) for s in names]
    if st.state == "running":
        rows_data.append(("running", len(st.running), "started, no record yet"))
    most = max([1] + [n for _, n, _ in rows_data])
    rows = [(f' class="st-{esc(s)}"', [f"<code>{esc(s)}</code>", str(n),
             f'<span class="bar" style="width:{100 * n / most:.1f}%"></span>', esc(what)])
            for s, n, what in rows_data]
    finished = sum(counts.get(s, 0) for s in FINISHED)
    want = st.settings.get("trials")
    note = f"{finished} of {want} trials finished" if isinstance(want, int) else f"{_count(finished, 'trial')} finished"
    m = measurement_counts(st.records)
    quality = ""
    if m["measurements"]:
        quality = (f'<p id="measurement-quality">{esc(measurement_text(m))}; {m["discarded_rounds"]} of '
                   f'{m["rounds"]} timed rounds discarded because a measuring thread waited for a CPU.</p>')
    return (f'<section id="counts"><h2>Trial status</h2><p>{esc(note)}; {_count(len(st.records), "record")} in all.</p>'
            f'{_table(["status", "trials#", "", "meaning"], rows, "counts")}{quality}</section>')


def _section_predictor(st: RunState) -> str:
    s = predictor_stats(st.records)
    parts = ['<section id="predictor-section"><h2>Latency predictor</h2>']
    if s["n"]:
        rho = "–" if s["spearman"] is None else f"{s['spearman']:.3f}"
        parts.append(_table(["trials#", "MAE ms#", "MAPE#", "within 10%#", "rank correlation (Spearman)#"],
                            [[str(s["n"]), f"{s['mae_ms']:.3f}", f"{s['mape_pct']:.1f}%",
                              f"{100 * s['within_10pct']:.0f}%", rho]], "kv"))
        parts.append(predictor_svg(st, s["pairs"]))
    else:
        parts.append('<p class="muted">No trial has both a predicted and a measured latency: the per-operator latency '
                     'table covered none of the candidates (<code>archdsl bench --build-table SPACE.arch</code> '
                     'builds it), or the predictor was off.</p>')
    info = (st.summary or {}).get("predictor")
    if isinstance(info, dict):
        parts.append(f'<p class="muted">{esc(predictor_words(info))}</p>')
    return "".join(parts) + "</section>"


def _section_machine(st: RunState) -> str:
    fps: dict[str, tuple[dict, int]] = {}
    threads: Counter[str] = Counter()
    for r in st.records:
        lat = r.get("latency") if isinstance(r.get("latency"), dict) else {}
        fp = lat.get("fingerprint")
        if isinstance(fp, dict):
            key = str(fp.get("hash") or json.dumps(fp, sort_keys=True))
            fps[key] = (fp, fps.get(key, (fp, 0))[1] + 1)
        if lat.get("threads") is not None:
            threads[str(lat.get("threads"))] += 1
    parts = ['<section id="machine"><h2>Machine</h2>']
    if not fps:
        parts.append('<p class="muted">No measurement recorded a machine fingerprint yet.</p>')
    if len(fps) > 1:
        parts.append(f'<p class="warn">Latencies were measured on {len(fps)} different machines or setups: '
                     "compare them with care.</p>")
    for fp, n in fps.values():
        rows = [[f"<code>{esc(k)}</code>", esc(_value(v))] for k, v in fp.items()]
        parts.append(f"<h3>fingerprint {esc(fp.get('hash', '?'))} ({_count(n, 'measurement')})</h3>"
                     + _table(["field", "value"], rows, "kv"))
    if threads:
        parts.append("<p>torch threads while measuring: " + esc(", ".join(
            f"{t} ({_count(n, 'trial')})" for t, n in sorted(threads.items()))) + "</p>")
    return "".join(parts) + "</section>"


def _section_settings(st: RunState) -> str:
    s = st.settings
    keys = ["spec", "budget_ms", "objective", "algo", "trials", "dataset", "dataset_limit", "epochs", "seed",
            "fixed", "model", "input_shape", "address", "created", "archdsl_version", "spec_sha256"]
    keys += [k for k in s if k not in keys and k not in ("dimensions", "resumed")]
    if s.get("objective", "accuracy") != "accuracy":  # a zero-cost proxy trains nothing: no epochs to show
        keys.remove("epochs")
    rows = [[f"<code>{esc(k)}</code>", esc(_value(s[k]))] for k in keys if k in s]
    parts = [f'<section id="settings"><h2>Search settings</h2>{_table(["setting", "value"], rows, "kv")}']
    for res in s.get("resumed") or []:
        if isinstance(res, dict):
            parts.append(f"<p>resumed {esc(res.get('time'))}: changed {esc(_value(res.get('changed')))}</p>")
    dims = [d for d in s.get("dimensions") or [] if isinstance(d, dict)]
    if dims:
        rows = [[f"<code>{esc(d.get('name'))}</code>", esc(_value(d.get("domain"))), esc(d.get("where", ""))]
                for d in dims]
        parts.append(f"<details><summary>{len(dims)} search dimensions</summary>"
                     f"{_table(['choice point', 'domain', 'where'], rows)}</details>")
    return "".join(parts) + "</section>"


def _section_failures(st: RunState) -> str:
    failed = [r for r in st.records if r.get("status") == "failed"]
    rejected = Counter(str(r.get("reason") or r.get("error") or "no message").strip() for r in st.records
                       if r.get("status") == "rejected")  # grouped by the first (positioned) message
    if not failed and not rejected:
        return '<section id="failures"><h2>Failures</h2><p class="muted">No trial failed or was rejected.</p></section>'
    parts = ['<section id="failures"><h2>Failures</h2>']
    if failed:
        rows = [[f'<a href="#{st.anchor(r)}">{esc(r.get("trial"))}</a>', _point(r.get("point")),
                 f'<pre class="error">{esc(r.get("error") or "no message")}</pre>'] for r in failed]
        parts.append(f"<h3>{len(failed)} failed trials</h3>" + _table(["trial#", "choices", "error"], rows))
    if rejected:
        rows = [[str(n), f'<pre class="error">{esc(msg)}</pre>'] for msg, n in rejected.most_common()]
        parts.append(f"<h3>{sum(rejected.values())} rejected candidates</h3>" + _table(["times#", "reason"], rows))
    return "".join(parts) + "</section>"


def _section_trials(st: RunState) -> str:
    rows = []
    for r in st.records:
        err = str(r.get("error") or "")
        trial = r.get("trial")
        rows.append((f' id="{st.anchor(r)}" class="st-{esc(r.get("status"))}"', [
            esc("–" if trial is None else trial), f"<code>{esc(r.get('status'))}</code>", _score(r.get(st.metric)),
            _f(r.get("latency_ms")), _f(r.get("predicted_ms")), _int(r.get("params")), esc(r.get("hash") or "–"),
            esc(err.splitlines()[0][:160] if err else "")]))
    return (f'<section id="trials"><details><summary><h2>All {len(rows)} records</h2></summary>'
            + _table(["trial#", "status", f"{st.metric}#", "latency ms#", "predicted ms#", "params#", "hash", "error"],
                     rows, "trials") + "</details></section>")


def _problems(st: RunState) -> str:
    notes, warns = [], []
    for p in st.problems:
        (notes if st.state == "running" and "partial last line" in p else warns).append(p)
    for p in (st.summary or {}).get("problems") or []:
        warns.append(f"noted by the search: {p}")
    out = ""
    if warns:
        out += ('<section id="problems" class="warn-box"><h2>Problems reading the records</h2><ul>'
                + "".join(f"<li><code>{esc(p)}</code></li>" for p in warns) + "</ul></section>")
    if notes:
        out += ('<p class="muted" id="notes">The last record was being written while this page was made; it is '
                'left out: ' + "".join(f"<code>{esc(p)}</code>" for p in notes) + "</p>")
    return out


def _cards(st: RunState) -> str:
    from .pareto import best_under_budget

    best = best_under_budget(st.records, st.budget, metric=st.metric)
    counts = Counter(str(r.get("status")) for r in st.records)
    finished = sum(counts.get(s, 0) for s in FINISHED)
    want = st.settings.get("trials")
    cards = [("trials finished", f"{finished}" + (f" / {want}" if isinstance(want, int) else ""),
              f"{len(st.running)} running" if st.state == "running" else f"{len(st.records)} records"),
             ("latency budget", f"{st.budget:g} ms" if st.budget is not None else "–", "batch 1, regime-normalized"),
             ("objective", str(st.settings.get("objective", "?")), f"search algorithm {st.settings.get('algo', '?')}")]
    m = measurement_counts(st.records)
    if m["measurements"]:
        cards.append(("latency measurements", f"{m['disturbed']} disturbed",
                      f"of {m['measurements']}; {m['retried']} retried, {m['unmeasured']} unmeasured"))
    if best:
        cards.append((f"best {st.metric} within budget", _score(best.get(st.metric)),
                      f"trial {best.get('trial')} at {_f(best.get('latency_ms'))} ms"))
    else:
        cards.append(("best within budget", "none yet" if st.state == "running" else "none", "no ok trial in budget"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div><div class="s">{esc(s)}</div>'
        f"</div>" for k, v, s in cards) + "</div>"


_CSS = """
:root{--fg:#1e2533;--muted:#5f6b7d;--line:#e2e6ec;--bg:#f4f6f9;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 24px 48px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:0 0 12px;display:inline-block}
h3{font-size:14px;margin:18px 0 8px}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:0 16px;align-items:start}
header .meta{color:var(--muted)}header code{color:var(--fg)}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:16px 0}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;margin-left:8px;
vertical-align:middle;color:#fff}
.badge.finished{background:#15803d}.badge.running{background:#d97706}.badge.interrupted{background:#64748b}
.badge.stopped{background:#b91c1c}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:650;margin:2px 0}.card .s{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;margin:4px 0}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#f8fafc}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv{width:auto}table.kv td:first-child{padding-right:24px}
tbody tr:hover{background:#f5f8ff}tr:target{background:#fff7d6}
code,pre,.point{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:12px}
pre.error{margin:0;white-space:pre-wrap;word-break:break-word;color:#991b1b}
dl.point{margin:0;display:grid;grid-template-columns:max-content auto;column-gap:10px;line-height:1.3}
dl.point dt{color:var(--muted)}dl.point dd{margin:0}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.muted{color:var(--muted)}.warn{color:#b45309;font-weight:600}
.warn-box{border-color:#f59e0b;background:#fffbeb}
.bar{display:inline-block;height:10px;border-radius:3px;background:var(--accent);min-width:1px}
table.counts td:nth-child(3){width:28%}table.kv td:last-child{overflow-wrap:anywhere}
table.kv td:first-child{white-space:nowrap}
.st-failed .bar{background:#dc2626}.st-over_budget .bar,.st-predicted_over_budget .bar{background:#94a3b8}
.st-rejected .bar{background:#f59e0b}.st-duplicate .bar{background:#cbd5e1}.st-running .bar{background:#d97706}
details{margin:6px 0}summary{cursor:pointer}
.graph-box{border:1px solid var(--line);border-radius:8px;padding:6px 10px}
.graph{max-height:640px;overflow:auto;padding:8px 0}.graph svg{max-width:100%;height:auto}
svg.plot{width:100%;max-width:1100px;height:auto;display:block;margin:4px 0}
#predictor{max-width:560px}
svg.plot text{font-size:11px;fill:#5f6b7d}svg.plot text.label{font-size:12px;fill:#1e2533}
svg.plot .grid{stroke:#eef1f5}svg.plot .axes{fill:none;stroke:#9aa5b4}
svg.plot .pt-ok{fill:#3b82f6;fill-opacity:.7;stroke:#1d4ed8;stroke-width:.8}
svg.plot .pt-front{fill:#f97316;stroke:#9a3412;stroke-width:1}
svg.plot .pt-over,svg.plot .pt-pred{stroke:#8b95a5;stroke-width:1.6;fill:none}
svg.plot .pt-base{fill:#2e9e44;stroke:#1b1f24;stroke-width:.6}svg.plot .base-label{fill:#2e7d32;font-size:11px}
svg.plot circle:hover{stroke:#111;stroke-width:2}
svg.plot .front-line{fill:none;stroke:#f97316;stroke-width:1.6}
svg.plot .budget{stroke:#dc2626;stroke-width:1.4;stroke-dasharray:6 4}svg.plot .budget-label{fill:#dc2626}
svg.plot .diag{stroke:#94a3b8;stroke-dasharray:5 4}svg.plot text.empty{font-size:14px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
"""


def build_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None, top: int = 10) -> str:
    """The HTML page for the search in `run_dir` (read-only, see the module docstring). Links to files in the run
    directory are relative to `out`'s directory (the current directory when `out` is None), so the page keeps
    working when it and the run directory move together. `top`: rows of the top-architectures table.
    Raises ReportError when `run_dir` is not a readable search output directory."""
    return render(read_run(run_dir), out=out, top=top)


def render(st: RunState, *, out: str | os.PathLike | None = None, top: int = 10) -> str:
    """The page for an already read RunState (see build_report)."""
    base = Path(out).parent if out is not None else Path.cwd()
    spec = Path(str(st.settings.get("spec", "search")))
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    body = [
        f"<header><h1>Search report: {esc(spec.name)}<span class=\"badge {esc(st.state)}\">{esc(st.state)}</span>"
        f"</h1><div class=\"meta\">run directory <code>{esc(st.path)}</code> · {esc(st.state_note)} · page made "
        f"{esc(now)}</div></header>",
        _cards(st), _problems(st),
        f'<section id="pareto-section"><h2>Pareto front</h2>{pareto_svg(st)}<p class="muted">Each point is a trial '
        f"(hover for details, click for its row); the front is the best {esc(st.metric)} at each latency within the "
        "budget.</p></section>",
        _section_top(st, base, top), _section_baselines(st, base),
        f'<div class="two">{_section_counts(st)}{_section_predictor(st)}</div>',
        f'<div class="two">{_section_machine(st)}{_section_settings(st)}</div>', _section_failures(st),
        _section_trials(st),
        f"<footer>archdsl {esc(st.settings.get('archdsl_version', ''))} · <code>archdsl report</code></footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>archdsl search report: {esc(spec.name)}</title><style>{_CSS}</style></head>\n"
            f"<body><main>\n{chr(10).join(body)}\n</main></body></html>\n")


# ------------------------------------------------------------------------------------------------ command line

def add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="write one self-contained HTML page of a search's results (finished or "
                                      "running)")
    p.add_argument("run_dir", help="the search's output directory (its --out)")
    p.add_argument("-o", "--output", default="report.html",
                   help="the HTML file to write (default report.html; - for standard output)")
    p.add_argument("--top", type=int, default=10, help="rows of the top-architectures table (default 10)")
    p.set_defaults(fn=cmd_report)


def cmd_report(args) -> int:
    """Exit code: 0 written, 1 the run directory cannot be read or the page cannot be written, 2 bad usage."""
    if args.top < 1:
        print(f"archdsl: error: --top must be at least 1, got {args.top}", file=sys.stderr)
        return 2
    out = None if args.output == "-" else Path(args.output)
    if out is not None and out.name in _PROTECTED and out.resolve().parent == Path(args.run_dir).resolve():
        print(f"archdsl report: {out} is one of the search's own files; write the page elsewhere", file=sys.stderr)
        return 1
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        print(f"archdsl: error: the report is an HTML page: name it .html (got {args.output!r})", file=sys.stderr)
        return 2
    try:
        st = read_run(args.run_dir)
        text = render(st, out=out, top=args.top)
    except ReportError as err:
        print(f"archdsl report: {err}", file=sys.stderr)
        return 1
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"archdsl report: cannot write {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(st.records)} trial records, search {st.state}")
    return 0
