"""How far the bfloat16 deploy form is from float32 on a real data set (issue 20's accuracy report).

Takes: a spec (default examples/baselines/convnext.arch) and either --weights (an `archdsl train` weights.pt, with
the --dataset and --dataset-limit it was trained with) or --epochs N (it trains one now with `archdsl train`, the
search's recipe, into --work). Returns: on the data set's official test split, the float32 deploy form's and the
bfloat16 deploy form's top-1 accuracy, their top-1 agreement, and the max and mean absolute logit difference
(also relative to the largest float32 logit); printed and written to --json with the CPU's flags and the load.
Refuses on a CPU without avx512_bf16 or AMX (the bfloat16 form is refused there). Nothing here is timed.
Target (issue 20): top-1 agreement of 99.5% or more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "baselines" / "convnext.arch"))
    ap.add_argument("--weights", help="trained weights (else trained now for --epochs)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--dataset", default="fashion")
    ap.add_argument("--dataset-limit", type=int, help="images to train and validate on (the test split stays whole)")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "runs" / "bf16_accuracy"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_bf16_accuracy_cpu2.json"))
    a = ap.parse_args()

    from archdsl.search.data import fit_to_input, load_dataset

    import archdsl
    from archdsl.codegen.lowp import bf16_unsupported

    why = bf16_unsupported()
    if why is not None:
        raise SystemExit(f"bf16_accuracy: {why}")
    weights = a.weights
    if weights is None:
        out = Path(a.work)
        weights = out / "weights.pt"
        if not weights.exists():
            cmd = [sys.executable, "-m", "archdsl", "train", a.spec, "--dataset", a.dataset, "--epochs",
                   str(a.epochs), "--out", str(out)]
            if a.dataset_limit:
                cmd += ["--dataset-limit", str(a.dataset_limit)]
            if (out / "checkpoint.pt").exists():
                cmd += ["--resume"]
            print("$ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    m = archdsl.load(a.spec, weights=str(weights)).eval()
    fp32 = archdsl.deploy(m)
    bf16 = archdsl.deploy(m, dtype="bfloat16")
    ds = fit_to_input(load_dataset(a.dataset, limit=a.dataset_limit), *m.input_chw)
    if ds.x_test is None:
        raise SystemExit(f"bf16_accuracy: {a.dataset} has no test split")
    n = agree = right32 = right16 = 0
    max_diff = sum_diff = top = 0.0
    with torch.inference_mode():
        for i in range(0, len(ds.y_test), 500):
            x, y = ds.x_test[i:i + 500], ds.y_test[i:i + 500]
            l32, l16 = fp32(x), bf16(x)
            d = (l16 - l32).abs()
            max_diff, sum_diff = max(max_diff, float(d.max())), sum_diff + float(d.mean()) * len(y)
            top = max(top, float(l32.abs().max()))
            p32, p16 = l32.argmax(1), l16.argmax(1)
            agree += int((p32 == p16).sum())
            right32 += int((p32 == y).sum())
            right16 += int((p16 == y).sum())
            n += len(y)
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
    r = {"spec": os.path.relpath(a.spec, ROOT), "weights": str(weights), "dataset": a.dataset, "test_images": n,
         "accuracy_fp32": right32 / n, "accuracy_bf16": right16 / n, "top1_agreement": agree / n,
         "max_abs_logit_diff": max_diff, "mean_abs_logit_diff": sum_diff / n,
         "max_diff_relative": max_diff / top if top else None, "float32_nodes": bf16.float32_nodes,
         "target_agreement": 0.995, "met": agree / n >= 0.995,
         "cpu": {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags},
         "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__}
    print(json.dumps(r, indent=1))
    Path(a.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
