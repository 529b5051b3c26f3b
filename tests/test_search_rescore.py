"""`archdsl search --rescore N`: the best trials trained again with more seeds and ranked by their mean; and
`--val-fraction`, the share of the images the trials are scored on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from archdsl.search.driver import MATCH_ON_RESUME, SETTING_DEFAULTS
from archdsl.search.pareto import best_under_budget, top_k
from archdsl.search.records import RunDir, RunDirError
from archdsl.search.rescore import RESCORE_FILE, apply_rescores, extra_seeds, load_rescores, rescore
from archdsl.search.trial import TrialSettings

from archdsl.cli import main

TINY = Path(__file__).resolve().parent.parent / "examples" / "search" / "tiny_space.arch"
POINT = {"width": 16, "stages.0.kind": "dwconv", "stages.0.kernel": 3, "stages.0.blocks": 1,
         "stages.1.kind": "dwconv", "stages.1.kernel": 3, "stages.1.blocks": 1}


def _rec(trial: int, score: float, latency: float = 1.0, **kw) -> dict:
    return {"trial": trial, "status": "ok", "hash": f"h{trial}", "score": score, "latency_ms": latency,
            "point": {**POINT, "width": [16, 24, 32][trial % 3]}, **kw}


def _settings(**kw) -> TrialSettings:
    return TrialSettings(files={TINY.name: TINY.read_text()}, spec_name=TINY.name, budget_ms=2.0, seed=3, **kw)


def _width(g) -> int:
    return next(n.params.out for n in g.nodes() if n.op == "conv")  # the stem's width


class _Trainer:
    """Stands in for train_once: a score per (trial width, seed), and a log of the runs asked for."""

    def __init__(self, scores):
        self.scores, self.calls = scores, []

    def __call__(self, s, g, seed):
        self.calls.append((_width(g), seed))
        acc = self.scores[self.calls[-1]]
        return SimpleNamespace(diverged=acc is None, accuracies=[] if acc is None else [acc])


def test_rescoring_reranks_the_best_by_their_mean_and_puts_them_first(tmp_path):
    # trial 1 was lucky (0.90 once, 0.70 again), trial 2 steady (0.85, 0.85); trial 3 (0.80) is not rescored
    records = [_rec(1, 0.90), _rec(2, 0.85), _rec(3, 0.80), _rec(4, 0.99, latency=9.0)]  # 4: over the budget
    train = _Trainer({(24, 4): 0.70, (32, 4): 0.85})
    lines: list[str] = []
    got = rescore(records, _settings(), tmp_path, 2, 1, lines.append, train=train)
    assert train.calls == [(24, 4), (32, 4)]  # the two best under the budget, each with seed 3 + 1
    assert got["h1"] == {"scores": [0.90, 0.70], "seeds": [3, 4], "score": pytest.approx(0.80)}
    assert got["h2"]["score"] == pytest.approx(0.85)
    ranked = apply_rescores(records, got)
    assert [r["trial"] for r in top_k(ranked, 3, 2.0, metric="score")] == [2, 1, 3]
    best = best_under_budget(ranked, 2.0, metric="score")
    assert best["trial"] == 2 and best["rescored"] and best["score_trial"] == 0.85
    assert not any("rescored" in r for r in records)  # the records themselves are left as recorded
    assert any("rescoring the best 2 with 1 more seed" in s for s in lines)
    assert load_rescores(tmp_path, records, seed=3) == got  # what the report reads back from rescore.json
    # a resumed search reuses the runs; another recipe (epochs) trains again
    again = _Trainer({})
    assert rescore(records, _settings(), tmp_path, 2, 1, lines.append, train=again) == got and again.calls == []
    other = _Trainer({(24, 4): 0.5, (32, 4): 0.5})
    rescore(records, _settings(epochs=5), tmp_path, 2, 1, lines.append, train=other)
    assert len(other.calls) == 2
    assert json.loads((tmp_path / RESCORE_FILE).read_text())["runs"] == {"h1:4": 0.5, "h2:4": 0.5}


def test_a_failed_or_diverged_rescore_run_leaves_the_trials_own_score(tmp_path):
    records = [_rec(1, 0.90), _rec(2, 0.85)]
    lines: list[str] = []
    got = rescore(records, _settings(), tmp_path, 2, 2, lines.append,
                  train=_Trainer({(24, 4): None, (24, 5): 0.80, (32, 4): 0.85}))  # (32, 5) is missing: KeyError
    assert got["h1"] == {"scores": [0.90, 0.80], "seeds": [3, 5], "score": pytest.approx(0.85)}
    assert got["h2"]["scores"] == [0.85, 0.85]
    assert any("failed: KeyError" in s for s in lines)
    assert extra_seeds(3, 2) == [4, 5]


def test_rescore_settings_are_checked_before_anything_runs(tmp_path, capsys):
    base = ["search", str(TINY), "--latency-ms", "2", "--out", str(tmp_path / "o")]
    assert main(base + ["--rescore", "-1"]) == 2
    assert main(base + ["--rescore", "2", "--rescore-seeds", "0"]) == 2
    assert main(base + ["--val-fraction", "1.5"]) == 2
    for flag, bad in (("--concurrency", "0"), ("--latency-threads", "0"), ("--top", "-1"),
                      ("--supernet-epochs", "0")):
        assert main(base + [flag, bad]) == 2
    assert main(base + ["--rescore", "2", "--objective", "synflow"]) == 1
    err = capsys.readouterr().err
    assert "--rescore must be >= 0" in err and "--rescore-seeds must be at least 1" in err
    assert "--val-fraction must be between 0 and 1" in err and "needs the accuracy objective" in err
    assert "--concurrency must be at least 1, got 0" in err and "--top must be >= 0, got -1" in err
    assert not (tmp_path / "o").exists()


def test_a_run_written_before_val_fraction_existed_resumes_at_the_old_default(tmp_path):
    settings = {"spec_sha256": "a" * 64, "budget_ms": 2.0, "dataset": "digits", "val_fraction": 0.2}
    with RunDir.open(tmp_path, {k: v for k, v in settings.items() if k != "val_fraction"}, resume=False):
        pass
    with RunDir.open(tmp_path, settings, resume=True, must_match=MATCH_ON_RESUME, defaults=SETTING_DEFAULTS):
        pass
    with pytest.raises(RunDirError, match="val_fraction was 0.2, now 0.5"):
        RunDir.open(tmp_path, {**settings, "val_fraction": 0.5}, resume=True, must_match=MATCH_ON_RESUME,
                    defaults=SETTING_DEFAULTS)
