"""`archdsl train`: a tiny run writes weights that archdsl.load and `compile --deploy --weights` take and a
metrics.json with the test accuracy; a killed run resumed with --resume ends with bit-identical weights; resume
refuses other settings; a spec with open choices, a broken data set or a used --out is one clear error."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from archdsl.search import train_cmd  # noqa: E402

import archdsl  # noqa: E402
from archdsl import cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = "examples/search/tiny_space.arch"
FIXED = {"width": "16", "stages.0.kind": "dwconv", "stages.0.kernel": "3", "stages.0.blocks": "1",
         "stages.1.kind": "dwconv", "stages.1.kernel": "3", "stages.1.blocks": "1"}
SETS = [a for k, v in FIXED.items() for a in ("--set", f"{k}={v}")]
FAST = ["--dataset-limit", "300", "--threads", "1"]


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch):
    """Keep the compute lock of these runs away from a real search or benchmark on the machine."""
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))


def train(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["train", SPEC, *SETS, *FAST, *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_tiny_run_writes_weights_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = train(capsys, "--epochs", "2", "--out", str(out))
    assert rc == 0, err
    assert "epoch 1/2: train loss" in err and "epoch 2/2:" in err  # not a terminal: a plain line per epoch
    assert "test accuracy" in stdout and f"wrote {out / 'weights.pt'}" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert all({"train_loss", "val_loss", "val_accuracy", "seconds"} <= set(e) for e in m["epochs"])
    assert 0 <= m["test_accuracy"] <= 1 and m["val_accuracy"] == m["epochs"][-1]["val_accuracy"]
    assert m["settings"] == {**train_cmd.DEFAULTS, "epochs": 2, "dataset_limit": 300, "threads": 1}
    d = m["dataset"]
    assert (d["train"] + d["val"], d["test"]) == (300, 359) and d["test_split"].startswith("held out")
    assert "load_digits" in d["source"] and d["num_classes"] == 10
    g = archdsl.check_file(SPEC, FIXED)
    assert (m["params"], m["macs"]) == (g.total().params, g.total().macs) and m["seconds"] > 0
    assert m["model"] == "tiny_space" and m["input_shape"] == [1, 16, 16]

    sd = weights(out / "weights.pt")
    model = archdsl.load(SPEC, FIXED, weights=out / "weights.pt")
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    deployed = archdsl.load(SPEC, FIXED, weights=out / "weights.pt", form="deploy")
    x = torch.randn(4, 1, 16, 16)
    assert torch.allclose(model.eval()(x), deployed(x), atol=1e-5)
    rc = cli.main(["compile", SPEC, *SETS, "--deploy", "--weights", str(out / "weights.pt"),
                   "-o", str(tmp_path / "deploy.py")])
    assert rc == 0 and (tmp_path / "deploy.pt").is_file()

    # the directory now holds a run: a new one there is refused, and --resume of a finished run only rewrites it
    rc, _, err = train(capsys, "--epochs", "2", "--out", str(out))
    assert rc == 1 and "already holds a training run" in err and "--resume" in err
    rc, _, err = train(capsys, "--out", str(out), "--resume")
    assert rc == 0 and "after epoch 2 of 2" in err
    assert all(torch.equal(v, sd[k]) for k, v in weights(out / "weights.pt").items())

    # --weights: fine-tuning starts from those weights, not from the seed's initialization
    rc, _, err = train(capsys, "--epochs", "1", "--lr", "1e-9", "--out", str(tmp_path / "tuned"), "--weights",
                       str(out / "weights.pt"))
    assert rc == 0 and "from the weights in" in err, err
    tuned = weights(tmp_path / "tuned" / "weights.pt")
    assert all(torch.allclose(v, sd[k], atol=1e-6) for k, v in tuned.items() if v.is_floating_point()
               and "running" not in k)  # lr ~0: the weights it started from
    rc, _, err = train(capsys, "--epochs", "1", "--out", str(tmp_path / "bad"), "--weights", str(tmp_path / "no.pt"))
    assert rc == 1 and "no.pt" in err and "Traceback" not in err


def test_killed_run_resumes_to_identical_weights(tmp_path, capsys):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    rc, _, err = train(capsys, "--epochs", "3", "--out", str(straight))
    assert rc == 0, err
    env = {**os.environ, "ARCHDSL_TRAIN_TEST_KILL_AFTER": "1"}
    r = subprocess.run([sys.executable, "-m", "archdsl", "train", SPEC, *SETS, *FAST, "--epochs", "3",
                        "--out", str(killed)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr  # SIGKILL right after epoch 1's checkpoint
    assert (killed / "checkpoint.pt").is_file() and not (killed / "weights.pt").exists()
    assert not list(killed.glob("*.tmp-*"))

    rc, _, err = train(capsys, "--out", str(killed), "--resume", "--lr", "0.01")
    assert rc == 1 and "cannot resume" in err and "--lr 0.01 (checkpoint: 0.002)" in err
    rc = cli.main(["train", SPEC, "--set", "width=24", *SETS[2:], *FAST, "--out", str(killed), "--resume"])
    assert rc == 1 and "another network" in capsys.readouterr().err
    rc, _, err = train(capsys, "--out", str(killed), "--resume")  # left-out flags: the checkpoint's (--epochs 3)
    assert rc == 0, err
    assert "after epoch 1 of 3" in err and "epoch 2/3:" in err and "epoch 3/3:" in err

    a, b = weights(straight / "weights.pt"), weights(killed / "weights.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in ma["epochs"]]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in mb["epochs"]]
    assert ma["test_accuracy"] == mb["test_accuracy"] and (ma["sessions"], mb["sessions"]) == (1, 2)


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    rc, _, err = train(capsys, "--out", str(tmp_path / "none"), "--resume")
    assert rc == 1 and "nothing to resume" in err


def test_open_choices_are_refused(tmp_path, capsys):
    rc = cli.main(["train", SPEC, "--set", "width=16", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "open choice 'stages.0.kind'" in err and "--set stages.0.kind=VALUE" in err
    assert "width" not in err.split("open choice")[1] and "Traceback" not in err


def test_diverged_training_is_one_clear_error(tmp_path, capsys):
    rc, _, err = train(capsys, "--lr", "1e30", "--epochs", "1", "--out", str(tmp_path / "o"))
    assert rc == 1 and "archdsl: error: the training loss became non-finite in epoch 1" in err
    assert "lower --lr (no epoch finished)" in err and not (tmp_path / "o" / "weights.pt").exists()


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    for flag, value in (("--epochs", "0"), ("--val-fraction", "1.5"), ("--label-smoothing", "1"), ("--lr", "0")):
        rc = cli.main(["train", SPEC, *SETS, flag, value, "--out", str(tmp_path / "o")])
        assert rc == 2 and f"{flag} must" in capsys.readouterr().err


def test_data_set_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    for argv, expected in ((["--dataset", "cifar"], "unknown data set 'cifar'"),
                           (["--dataset", f"folder:{tmp_path / 'nope'}"], "no such folder"),
                           (["--dataset", f"folder:{tmp_path / 'imgs'}"], "empty class folder"),
                           (["--dataset", f"npz:{tmp_path / 'nope.npz'}"], "no such file")):
        rc, _, err = train(capsys, *argv, "--out", str(tmp_path / "o"))
        assert rc == 1 and err.strip().splitlines()[-1].startswith("archdsl: error: ") and expected in err
        assert "Traceback" not in err


def test_npz_data_set_trains_with_its_test_split(tmp_path, capsys):
    """RGB channels-last arrays with their own test split: resized to the spec's 16x16, and a 3-channel set needs
    a 3-channel input (only grey images are repeated to fit)."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 10
    x = (rng.random((120, 12, 12, 3)) * 60 + y[:, None, None, None] * 19).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:30], y_test=y[:30])
    rc, _, err = train(capsys, "--dataset", f"npz:{tmp_path / 'd.npz'}", "--epochs", "1", "--out", str(tmp_path / "o"))
    assert rc == 1 and "3 channels; the architecture takes 1" in err
    rc, _, err = train(capsys, "--dataset", f"npz:{tmp_path / 'd.npz'}", "--input", "3x16x16", "--epochs", "1",
                       "--out", str(tmp_path / "o"))
    assert rc == 0, err
    d = json.loads((tmp_path / "o" / "metrics.json").read_text())["dataset"]
    assert d["test"] == 30 and d["test_split"].startswith("official") and d["train"] + d["val"] == 120


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    class Stats:
        epoch, train_loss, val_loss, val_accuracy, seconds = 1, 0.5, 0.4, 0.875, 0.1

    stream = Tty()
    bar = train_cmd._progress(2, 3, 0, stream)
    for step in (1, 2, 3):
        bar.step(step, 0.5)
    bar.epoch_end(Stats())
    bar.close()
    text = stream.getvalue()
    assert isinstance(bar, train_cmd._Bar) and "epoch 2/2" in text and "val acc 0.8750" in text and "3/6" in text
    plain = io.StringIO()
    lines = train_cmd._progress(2, 3, 0, plain)
    lines.epoch_end(Stats())
    assert isinstance(lines, train_cmd._Lines) and plain.getvalue().startswith("epoch 1/2: train loss 0.5000")


def test_help_lists_the_data_set_forms(capsys):
    for cmd in ("train", "search"):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "folder:PATH" in text and "npz:PATH" in text, cmd
