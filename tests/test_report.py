"""`archdsl report`: the HTML page of a search, from a real tiny search (Ray on loopback, a zero-cost proxy, once per
module) and from run directories written with search/records.py's own API for the edge cases (a corrupt line, a
search still running with the lock held by another process, an empty run, hostile text). The page is opened in a
real headless Chromium: it must render, show the Pareto plot and the table, and log no error."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest
from archdsl.search.records import RunDir, RunDirError
from archdsl.search.report import ReportError, add_report_parser, build_report, clean_svg, predictor_words, read_run
from archdsl.search.report_plots import predictor_stats, spearman

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "search" / "tiny_space.arch"
CHROMIUM = os.environ.get("ARCHDSL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SMALL_SPEC = "model m() {\n    input(1, 8, 8)\n    conv(4, k=3)\n    gap()\n    linear(10)\n}\n"
SETTINGS = {"spec": "nowhere/space.arch", "spec_sha256": "a" * 64, "budget_ms": 5.0, "trials": 6,
            "algo": "random", "objective": "accuracy", "dataset": "digits", "seed": 0}
FP = {"cpu_model": "Test CPU", "machine": "x86_64", "physical_cores": 2, "logical_cores": 4, "usable_cores": 4,
      "torch_threads": 1, "torch_version": "2.x", "cuda_device": None, "hash": "f00dfeed1234"}

pytestmark = pytest.mark.filterwarnings("ignore")


def rec(trial: int, status: str = "ok", acc: float | None = 0.5, lat: float | None = 3.0, **kw) -> dict:
    fp = kw.pop("fp", FP)
    return {"trial": trial, "trial_id": f"t{trial:04d}", "status": status, "point": {"width": 16, "kind": "dw"},
            "hash": kw.pop("hash", f"h{trial}"), "score": acc, "accuracy": acc, "epochs": 1, "latency_ms": lat,
            "latency": {"median_ms": lat, "threads": 1, "fingerprint": fp} if lat is not None else None,
            "predicted_ms": kw.pop("predicted_ms", None), "params": 1000 + trial, "macs": 20000, "activations": 300,
            "error": None, "node": "n0", "latency_node": "n0", "seconds": {"measure": 0.5},
            "time": "2025-01-01T00:00:00+00:00", **kw}


def write_run(path: Path, records: list[dict], settings: dict | None = None) -> Path:
    with RunDir.open(path, settings or SETTINGS, resume=False) as run:
        for r in records:
            run.append(r)
    return path


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `path` with its bytes and mtime (to prove the report changed nothing)."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}


class Page(HTMLParser):
    """The parts of the page the tests look at: ids, hrefs, the top table's rows, text, and whether it parses."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.top_rows = 0
        self._in_top = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "table":
            self._in_top = a.get("id") == "top"
        if tag == "tr" and self._in_top and (a.get("id") or "").startswith("rank-"):
            self.top_rows += 1


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="archdsl")
    add_report_parser(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["report", *argv])
    return args.fn(args)


# --- a real search ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A finished 2-trial search of the tiny space, scored by a zero-cost proxy (no training), top 2 written."""
    pytest.importorskip("ray")
    pytest.importorskip("optuna")
    from archdsl.search.driver import SearchConfig, run_search

    base = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                     "RAY_USAGE_STATS_ENABLED": "0", "ARCHDSL_LOCK_DIR": str(base / "locks"),
                     "ARCHDSL_CACHE_DIR": str(base / "cache")}.items():
            mp.setenv(k, v)
        out = base / "run"
        run_search(SearchConfig(spec=str(TINY), budget_ms=50, trials=2, objective="naswot", out=str(out), seed=1,
                                latency_threads=1, top_k=2), progress=lambda s: None)
    return out


@pytest.mark.slow
def test_report_of_a_real_search(real_run, tmp_path):
    before = snapshot(real_run)
    out = tmp_path / "pages" / "report.html"
    out.parent.mkdir()
    text = build_report(real_run, out=out)
    assert snapshot(real_run) == before  # read only
    page = Page(text)
    recs = [json.loads(line) for line in (real_run / "trials.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["status"] == "ok"]
    assert ok, recs
    assert {"pareto", "top", "counts", "predictor-section", "machine", "settings", "failures"} <= page.ids
    assert 'class="badge finished"' in text and "budget 50 ms" in text
    assert page.top_rows == len({r["hash"] for r in ok})  # one row per network (default --top 10 > 3 trials)
    # the .arch links are relative to the page and reach the files the search wrote
    arch = [h for h in page.hrefs if h.endswith(".arch")]
    written = sorted((real_run / "top").glob("*.arch"))
    assert len(arch) == len(written) == min(2, len(ok))
    assert sorted((out.parent / h).resolve() for h in arch) == [p.resolve() for p in written]
    assert all(h.startswith("../") for h in arch)
    # every ok trial is a point of the plot, linked to its row
    pareto = text[text.index('<svg id="pareto"'):text.index("</svg>", text.index('<svg id="pareto"'))]
    assert all(f'href="#trial-{r["trial"]}"' in pareto for r in ok)
    assert f'id="trial-{ok[0]["trial"]}"' in text
    # status counts, settings, fingerprint of the measuring machine
    counts = text[text.index('id="counts"'):]
    assert re.search(rf"<code>ok</code></td><td class=num>{len(ok)}</td>", counts)
    assert "naswot" in text and "tpe" in text
    fp = ok[0]["latency"]["fingerprint"]
    assert f"fingerprint {fp['hash']}" in text and fp["torch_version"] in text
    # a rendered graph for each top architecture, or the reason there is none
    graphs = re.findall(r'<details class="graph-box" id="graph-\d+">(.*?)</details>', text, re.S)
    assert len(graphs) == page.top_rows
    assert all('<div class="graph"><svg' in g or "graph unavailable: " in g for g in graphs)


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(real_run, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; or set ARCHDSL_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")
    from matplotlib import image

    out = tmp_path / "report.html"
    assert run_cli(str(real_run), "-o", str(out)) == 0
    hostile = tmp_path / "hostile.html"
    assert run_cli(str(write_run(tmp_path / "hostile", hostile_records())), "-o", str(hostile)) == 0
    messages: list[tuple[str, str]] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
            page.on("dialog", lambda d: (messages.append(("dialog", d.message)), d.dismiss()))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else
                    messages.append(("request", r.url)))
            page.goto(out.as_uri())
            for sel in ("#pareto", "#top", "#counts"):
                box = page.locator(sel).bounding_box()
                assert box and box["width"] > 200 and box["height"] > 50, (sel, box)
            assert page.locator("#pareto circle").count() >= 1
            page.locator("#graph-1 summary").click()  # the first rendered graph (or its reason) opens
            opened = page.locator("#graph-1 .graph svg, #graph-1 p").first
            assert opened.is_visible()
            png = page.screenshot(full_page=True)

            page.goto(hostile.as_uri())
            assert "<script>alert(1)</script>" in page.locator("#failures").inner_text()
        finally:
            browser.close()
    assert [m for m in messages if m[0] in ("error", "pageerror", "dialog", "request")] == [], messages
    pixels = image.imread(io.BytesIO(png), format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pixels.shape[0] > 900 and pixels.shape[1] == 1280
    colors = {tuple(px) for px in pixels[::7, ::7, :3].reshape(-1, 3).round(2).tolist()}
    assert len(colors) > 40, len(colors)  # text, plot, tables: not a blank page
    (tmp_path / "report.png").write_bytes(png)


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    unreadable = write_run(tmp_path / "unreadable", [])
    (unreadable / "trials.jsonl").mkdir()  # reading it fails
    cases = [(tmp_path / "missing", "does not exist"), (tmp_path / "file.txt", "is not a directory"),
             (tmp_path / "empty", "is not a search output directory: it has no run.json"),
             (unreadable, "cannot read")]
    for path, message in cases:
        assert run_cli(str(path), "-o", str(tmp_path / "r.html")) == 1
        err = capsys.readouterr().err
        assert err.startswith("archdsl report: ") and message in err and err.count("\n") == 1, err
        assert "Traceback" not in err
        with pytest.raises(ReportError, match=message):
            build_report(path)
    (unreadable / "run.json").write_text("{not json")
    assert run_cli(str(unreadable)) == 1 and "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()

    run = write_run(tmp_path / "run", [rec(0)])
    before = snapshot(run)
    assert run_cli(str(run), "-o", str(run / "trials.jsonl")) == 1  # never over the search's own files
    assert "one of the search's own files" in capsys.readouterr().err
    assert run_cli(str(run), "--top", "0") == 2
    assert run_cli(str(run), "-o", str(tmp_path / "no" / "such" / "dir.html")) == 1
    assert "cannot write" in capsys.readouterr().err
    assert snapshot(run) == before
    assert run_cli(str(run), "-o", str(tmp_path / "r.html")) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert run_cli(str(run), "-o", "-") == 0
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>")


# --- run directories written with the records API -------------------------------------------------------------

def hostile_records() -> list[dict]:
    evil = "<script>alert(1)</script>"
    return [rec(0), rec(1, "failed", None, None, error=evil, point={"kind": '"><img src=x onerror=alert(2)>'}),
            rec(2, "rejected", None, None, error="</pre><script>alert(3)</script>", hash=None)]


def test_text_from_the_directory_is_escaped(tmp_path):
    settings = {**SETTINGS, "spec": "x/<b onmouseover=alert(5)>.arch", "note": "<script>alert(4)</script>"}
    text = build_report(write_run(tmp_path / "run", hostile_records(), settings))
    assert "<script" not in text.lower() and "<img" not in text and "<b " not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;/pre&gt;&lt;script&gt;alert(3)" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text and "&lt;b onmouseover=alert(5)&gt;.arch" in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing from outside
    assert "https://" not in text
    Page(text)  # parses
    failures = text[text.index('id="failures"'):]
    assert "1 failed trials" in failures and "1 rejected candidates" in failures


def test_corrupt_line_is_listed_not_fatal(tmp_path):
    run = write_run(tmp_path / "run", [rec(i, acc=0.5 + i / 10, lat=1.0 + i) for i in range(3)])
    lines = (run / "trials.jsonl").read_bytes().splitlines(keepends=True)
    (run / "trials.jsonl").write_bytes(lines[0] + b"{garbage\n" + lines[1].replace(b"0.6", b"0.9") + lines[2])
    before = snapshot(run)
    text = build_report(run)
    assert snapshot(run) == before and not (run / "trials.corrupt.jsonl").exists()
    problems = text[text.index('id="problems"'):text.index("</section>", text.index('id="problems"'))]
    assert "trials.jsonl:2: corrupt: not valid JSON" in problems
    assert "trials.jsonl:3: corrupt: checksum mismatch" in problems
    assert 'id="trial-0"' in text and 'id="trial-2"' in text and 'id="trial-1"' not in text
    assert Page(text).top_rows == 2
    assert 'class="badge stopped"' in text  # no summary.json and nobody holds the lock: killed


HOLDER = textwrap.dedent("""
    import json, sys
    from archdsl.search.records import RunDir
    run = RunDir.open(sys.argv[1], json.loads(sys.argv[2]), resume=False)
    for r in json.loads(sys.argv[3]):
        run.append(r)
    with open(run.trials_path, "ab") as f:
        f.write(b'{"trial": 9, "status": "o')  # a record being written right now
    print("ready", flush=True)
    sys.stdin.readline()
    run.close()
""")


def test_running_search_with_the_lock_held_elsewhere(tmp_path):
    out = tmp_path / "run"
    records = [rec(0, lat=1.0, predicted_ms=1.2), rec(1, "over_budget", None, 9.0, predicted_ms=7.0)]
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), json.dumps(SETTINGS), json.dumps(records)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        (out / "ray" / "ray" / "run_trial_abc12345_3_hash=x").mkdir(parents=True)  # a trial Ray has started
        before = snapshot(out)
        st = read_run(out)
        text = build_report(out)
        assert snapshot(out) == before
        assert st.state == "running" and f"pid {proc.pid}" in st.state_note and st.running == ["abc12345"]
        assert 'class="badge running"' in text and f"pid {proc.pid}" in text
        assert "being written" in text and 'id="problems"' not in text  # a partial last line is expected here
        assert re.search(r"<code>running</code></td><td class=num>1</td>", text)
        assert re.search(r"<code>over_budget</code></td><td class=num>1</td>", text)
        assert "not written yet" in text  # top/ comes when the search ends
        with pytest.raises(RunDirError, match="another search"):  # the holder still has its lock
            RunDir.open(out, SETTINGS, resume=True)
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == 0
    st = read_run(out)  # let go, without a summary: stopped
    assert st.state == "stopped" and st.running == []


def test_state_from_the_lock_file_and_the_summary(tmp_path):
    run = write_run(tmp_path / "run", [rec(0)])
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    host = socket.gethostname()
    for info in ({"pid": dead, "host": host, "started": "2020-01-01T00:00:00+00:00"},  # killed: pid gone
                 {"pid": os.getpid(), "host": host, "started": "2000-01-01T00:00:00+00:00"}):  # pid reused since
        (run / ".lock").write_text(json.dumps(info))
        assert read_run(run).state == "stopped"
    (run / "summary.json").write_text(json.dumps({"counts": {"ok": 1}, "interrupted": True}))
    assert read_run(run).state == "interrupted"
    (run / "summary.json").write_text(json.dumps({"counts": {"ok": 1}, "interrupted": False,
                                                  "predictor": {"n": 0, "covered": 0, "uncovered": 1}}))
    text = build_report(run)
    assert 'class="badge finished"' in text and "predicted none of the 1 candidate:" in text
    (run / "summary.json").write_text('{"counts": {"ok"')  # caught while being written
    st = read_run(run)
    assert st.state == "stopped" and "summary.json: not readable" in st.problems[0]


def test_empty_run(tmp_path):
    text = build_report(write_run(tmp_path / "run", []))
    page = Page(text)
    assert "pareto" in page.ids and page.top_rows == 0
    assert "no measured trials yet" in text and "No architecture has met the budget" in text
    assert "0 of 6 trials finished" in text and "No trial has both a predicted and a measured latency" in text
    assert "No measurement recorded a machine fingerprint yet" in text


def test_predictor_accuracy_and_fingerprints(tmp_path):
    other = {**FP, "cpu_model": "Other CPU", "hash": "0123456789ab"}
    records = [rec(0, lat=1.0, predicted_ms=1.1), rec(1, lat=2.0, predicted_ms=1.8, acc=0.6),
               rec(2, lat=4.0, predicted_ms=5.0, acc=0.7, fp=other),
               {**rec(3, "predicted_over_budget", None, None, predicted_ms=40.0), "trial": None}]
    stats = predictor_stats(records)
    assert stats["n"] == 3 and stats["mae_ms"] == pytest.approx((0.1 + 0.2 + 1.0) / 3)
    assert stats["mape_pct"] == pytest.approx(100 * (0.1 + 0.1 + 0.25) / 3)
    assert stats["spearman"] == pytest.approx(1.0) and stats["within_10pct"] == pytest.approx(2 / 3)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0) and spearman([1], [1]) is None
    assert spearman([1, 2, 2], [1, 1, 1]) is None
    text = build_report(write_run(tmp_path / "run", records))
    section = text[text.index('id="predictor-section"'):text.index("</section>", text.index('id="predictor-sec'))]
    assert '<svg id="predictor"' in section and "0.433" in section and "15.0%" in section
    assert "2 different machines" in text and "Other CPU" in text and "Test CPU" in text
    pareto = text[text.index('<svg id="pareto"'):]
    assert "candidate (predicted_over_budget)" in pareto and "predicted 40.000 ms" in pareto  # at its prediction
    assert 'href="#rec-3"' in pareto and 'id="rec-3"' in text  # no trial number: linked by its record
    assert "budget 5 ms" in pareto


def test_links_and_graphs_of_top_architectures(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", [rec(0, acc=0.9, lat=1.0), rec(1, acc=0.8, lat=2.0)])
    (run / "top").mkdir()
    (run / "top" / "01_h0.arch").write_text(SMALL_SPEC)
    (run / "top" / "02_h1.arch").write_text("model m( {\n")  # does not parse
    calls = []

    def to_svg(graph, *, title=None, id_prefix=""):
        calls.append((title, id_prefix))
        return ('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/'
                'xlink" width="10pt" onload="alert(1)"><script>alert(2)</script><g id="n1"><a xlink:href="https://'
                'evil.example/" href="javascript:alert(3)"><text>conv</text></a><use xlink:href="#n1"/></g>'
                '<foreignObject><div>x</div></foreignObject></svg>')

    viz = types.ModuleType("archdsl.viz")
    viz.VizUnavailable = type("VizUnavailable", (RuntimeError,), {})
    viz.to_svg = to_svg
    monkeypatch.setitem(sys.modules, "archdsl.viz", viz)
    out = tmp_path / "a" / "b" / "page.html"
    text = build_report(run, out=out)
    assert 'href="../../run/top/01_h0.arch"' in text and 'href="../../run/top/02_h1.arch"' in text
    g1 = text[text.index('id="graph-1"'):text.index("</details>", text.index('id="graph-1"'))]
    assert '<svg width="10pt" xmlns="http://www.w3.org/2000/svg">' in g1 and "<text>conv</text>" in g1
    assert '<use href="#n1" />' in g1
    assert not any(s in g1 for s in ("script", "onload", "evil", "javascript", "foreignObject", "xlink"))
    g2 = text[text.index('id="graph-2"'):text.index("</details>", text.index('id="graph-2"'))]
    assert "graph unavailable: the architecture does not check: " in g2 and "02_h1.arch:1:" in g2
    assert calls == [("rank 1: 01_h0.arch", "g1-")]

    def missing(graph, **kw):
        raise viz.VizUnavailable("Graphviz's `dot` program is not installed: apt-get install graphviz")

    viz.to_svg = missing
    assert "graph unavailable: Graphviz&#x27;s `dot` program is not installed" in build_report(run)
    monkeypatch.setitem(sys.modules, "archdsl.viz", None)  # not importable at all
    assert "graph unavailable: archdsl.viz is not available" in build_report(run)


def test_clean_svg_refuses_what_is_not_svg():
    with pytest.raises(ValueError, match="not an SVG document"):
        clean_svg("<html><body/></html>")
    assert clean_svg('<svg xmlns="http://www.w3.org/2000/svg"><circle r="1"/></svg>') == \
        '<svg xmlns="http://www.w3.org/2000/svg"><circle r="1" /></svg>'


def test_accuracy_axis_stays_within_zero_and_one(tmp_path):
    """Accuracies near 0 and 1 do not stretch the axis past them (ticks -0.2 / 1.2 read as nonsense)."""
    records = [rec(0, acc=0.02, lat=1.0), rec(1, acc=0.99, lat=2.0), rec(2, acc=0.5, lat=1.5)]
    text = build_report(write_run(tmp_path / "run", records))
    pareto = text[text.index('<svg id="pareto"'):text.index("</svg>", text.index('<svg id="pareto"'))]
    ticks = re.findall(r">(-?[0-9.]+)</text>", pareto)  # latency ticks 0, 2, 4, 6 and accuracy ticks
    assert {"0.2", "0.8", "1"} <= set(ticks) and not {"1.2", "-0.2"} & set(ticks)
    assert min(float(t) for t in ticks) == 0.0


def test_predictor_summary_in_words():
    """summary.json's predictor figures say what the predictor did, how many predictions met a measurement, and how
    close they came (a new user read "n 0, covered 0, uncovered 30, scale 1" as nothing at all)."""
    none = predictor_words({"n": 0, "covered": 0, "uncovered": 30, "scale": 1.0})
    assert none.startswith("During the search the latency predictor predicted none of the 30 candidates: ")
    assert "every candidate was built and measured" in none and "archdsl bench --build-table" in none
    assert "scale" not in none and "uncovered" not in none
    some = predictor_words({"n": 12, "covered": 20, "uncovered": 10, "scale": 1.8234, "within_10pct": 0.5,
                            "within_5pct": 0.25, "extra": 2})
    assert "predicted 20 of the 30 candidates before building them" in some and "the other 10 lacked" in some
    assert "12 predictions were compared with the latency measured afterwards: 50% within 10%, 25% within 5%." in some
    assert "x 1.82 (the median ratio of measured to summed latency" in some and some.endswith("Also recorded: extra 2.")
    unmet = predictor_words({"n": 0, "covered": 1, "uncovered": 0, "scale": 1.0})
    assert "predicted 1 of the 1 candidate " in unmet and "No prediction was followed by a measurement" in unmet


def test_epochs_shown_only_for_the_accuracy_objective(tmp_path):
    settings_row = re.compile(r"<code>epochs</code></td><td>3</td>")
    trained = build_report(write_run(tmp_path / "a", [rec(0)], {**SETTINGS, "epochs": 3}))
    assert settings_row.search(trained)
    proxy = build_report(write_run(tmp_path / "b", [rec(0)], {**SETTINGS, "objective": "naswot", "epochs": 3}))
    assert "<code>epochs</code>" not in proxy and "naswot" in proxy
