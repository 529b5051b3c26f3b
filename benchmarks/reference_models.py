"""Reference models: the specs that claim to be published networks, checked against those networks' own code.

Takes: nothing (or --only NAME ..., --json PATH, --no-cuda). For each case below whose library is installed
(timm, torchvision: never archdsl dependencies, since they drag in a CUDA build of torch; run this where they
are, e.g. the lent GPU machine), it builds the other implementation with random weights and random BatchNorm
statistics (constant initial values such as a 1e-6 layer scale, BN's 1 and 0, are replaced by random ones, so
no branch hides behind a near-zero weight), saves its state_dict, imports it with the user's own command
(`python -m archdsl weights import SPEC CKPT -o OUT --map ...`), loads the result with `archdsl.load(spec,
weights=OUT)` and compares the two forwards in float64 on one random input.

Where CUDA is present it also runs every concrete bundled spec (examples/, docs/examples/) on the GPU in float32
(TF32 off), training form and deploy form, against the CPU float64 forward, and `archdsl bench --device cuda`.

Returns: exit 0 when every case that could run matched (max |ours - theirs| / max |theirs| < 1e-9 in float64;
on the GPU in float32, < 1e-4 or within 4x of the CPU's own float32 error); writes --json (default
benchmarks/results_reference_models.json) with each case, the library versions, the import's match counts and the
differences; a case whose model the installed library does not have is recorded as such, not as a failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

GAMMA = "examples/maps/timm_convnext.map"  # name maps as users pass them: --map-file
TV_REGNET, TIMM_FASTERNET = "examples/maps/torchvision_regnet.map", "examples/maps/timm_fasternet.map"
REGNETX = {"depth": "22", "w0": "24", "wa": "24.48", "wm": "2.54", "group_w": "16", "se": "false"}
T2 = {"embed_dim": "96", "act": '"relu"'}

# (spec, --set overrides, library, constructor, keyword arguments, name-map file or None)
CASES = [
    ("examples/convnext_atto.arch", {}, "timm", "convnext_atto", {}, GAMMA),
    ("examples/convnext_tiny.arch", {}, "timm", "convnext_tiny", {}, GAMMA),
    ("examples/inceptionnext_atto.arch", {}, "timm", "inception_next_atto", {}, GAMMA),
    ("examples/inceptionnext_tiny.arch", {}, "timm", "inception_next_tiny", {}, GAMMA),
    ("docs/examples/resnet50.arch", {}, "torchvision", "resnet50", {}, None),
    ("docs/examples/resnet50.arch", {}, "timm", "resnet50", {}, None),
    ("docs/examples/mobilenet_v2.arch", {}, "torchvision", "mobilenet_v2", {}, None),
    ("docs/examples/mobilenet_v2.arch", {}, "timm", "mobilenetv2_100", {}, None),
    ("examples/literature/regnet.arch", {}, "torchvision", "regnet_y_400mf", {}, TV_REGNET),
    ("examples/literature/regnet.arch", REGNETX, "torchvision", "regnet_x_400mf", {}, TV_REGNET),
    ("examples/literature/regnet.arch", {}, "timm", "regnety_004", {}, None),
    ("examples/literature/regnet.arch", REGNETX, "timm", "regnetx_004", {}, None),
    ("examples/literature/vgg16.arch", {}, "torchvision", "vgg16", {}, None),
    ("examples/literature/inception_v3.arch", {}, "torchvision", "inception_v3",
     {"aux_logits": False, "init_weights": True}, None),
    ("examples/literature/inception_v3.arch", {}, "timm", "inception_v3", {}, None),
    ("examples/literature/fasternet_t0.arch", {}, "timm", "fasternet_t0", {}, TIMM_FASTERNET),
    ("examples/literature/fasternet_t0.arch", T2, "timm", "fasternet_t2", {}, TIMM_FASTERNET),
    ("examples/literature/hornet_tiny.arch", {}, "timm", "hornet_tiny_7x7", {}, None),
    ("examples/literature/van_b0.arch", {}, "timm", "van_b0", {}, None),
    ("examples/literature/lsnet_t.arch", {}, "timm", "lsnet_t", {}, None),
    ("examples/literature/gfnet.arch", {}, "timm", "gfnet_xs", {}, None),
    ("examples/unireplknet_a.arch", {}, "timm", "unireplknet_a", {}, None),
]

CONCRETE = ["examples/*.arch", "examples/baselines/*.arch", "examples/literature/*.arch", "docs/examples/*.arch"]


def version(lib: str) -> str | None:
    try:
        return importlib.import_module(lib).__version__
    except Exception:  # noqa: BLE001 - absent or broken: the case is skipped and says why
        return None


def reference(lib: str, ctor: str, kw: dict):
    """The other implementation's model, or None when this version of the library does not have it."""
    if lib == "timm":
        import timm

        if ctor not in timm.list_models():
            return None
        return timm.create_model(ctor, pretrained=False, **kw)
    import torchvision.models as tvm

    fn = getattr(tvm, ctor, None)
    return None if fn is None else fn(weights=None, **kw)


@torch.no_grad()
def randomize(model, gen) -> None:
    """Random values everywhere a constant init would hide a branch (layer scale 1e-6, BN 1 and 0), random BN
    statistics; the library's own random init elsewhere."""
    for p in model.parameters():
        if p.numel() == 1 or float(p.std()) == 0.0:
            c = float(p.flatten()[0])
            p.copy_(c + 0.2 * max(abs(c), 0.5) * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=b.dtype))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=gen, dtype=b.dtype))


def run_case(spec, sets, lib, ctor, kw, map_file, work: Path) -> dict:
    import archdsl

    row = {"spec": spec, "set": sets, "library": lib, "model": ctor, "map": map_file}
    if version(lib) is None:
        return {**row, "status": f"{lib} not installed"}
    torch.manual_seed(0)
    ref = reference(lib, ctor, kw)
    if ref is None:
        return {**row, "status": f"{lib} {version(lib)} has no {ctor}"}
    randomize(ref, torch.Generator().manual_seed(1))
    ref = ref.eval().double()
    ckpt, out, rep = work / f"{ctor}.pth", work / f"{ctor}.archdsl.pt", work / f"{ctor}.report.json"
    torch.save(ref.state_dict(), ckpt)
    cmd = [sys.executable, "-m", "archdsl", "weights", "import", str(ROOT / spec), str(ckpt), "-o", str(out),
           "--report", str(rep)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    if map_file:
        cmd += ["--map-file", str(ROOT / map_file)]
    p = subprocess.run(cmd, cwd=work, capture_output=True, text=True)  # not the checkout: the installed package
    row["params_theirs"] = sum(t.numel() for t in ref.parameters())
    if p.returncode != 0:
        return {**row, "status": "import refused", "message": (p.stdout + p.stderr).strip()[-2000:],
                "stages": _stages(ref)}
    row["import"] = json.loads(rep.read_text())["counts"]
    overrides = {k: _value(v) for k, v in sets.items()}
    ours = archdsl.load(ROOT / spec, overrides, weights=str(out)).eval().double()
    row["params_ours"] = sum(t.numel() for t in ours.parameters())
    shape = _input_shape(spec, overrides)
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    rel = float((a - b).abs().max() / b.abs().max())
    row.update({"input": list(shape), "max_rel_diff": rel, "status": "equal" if rel < 1e-9 else "DIFFERENT"})
    return row


def _stages(ref) -> list | None:
    """torchvision RegNet's stages as (blocks, width), to say how a refused one differs."""
    trunk = getattr(ref, "trunk_output", None)
    if trunk is None:
        return None
    return [(len(st), st[0].f.c[0].out_channels) for st in trunk]


def _value(v: str):
    """The --set strings as Python values for archdsl.load (numbers, booleans, quoted strings)."""
    if v in ("true", "false"):
        return v == "true"
    if v.startswith('"'):
        return v.strip('"')
    return float(v) if "." in v else int(v)


def _input_shape(spec: str, overrides: dict) -> tuple[int, ...]:
    from archdsl.api import check_file

    return _first_shape(check_file(ROOT / spec, overrides))


def _first_shape(g) -> tuple[int, ...]:
    p = g.g.nodes[g.input_node]["node"].params
    return (p.c, p.h, p.w)


@torch.no_grad()
def calibrate(m, x) -> None:
    """BatchNorm statistics of one forward of x (train mode, cumulative average), then eval mode again."""
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()(x)
    m.eval()


@torch.no_grad()
def cuda_cases(progress) -> list[dict]:
    """Each concrete bundled spec on the GPU (float32, TF32 off; training and deploy form) against CPU float64."""
    import glob

    import archdsl
    from archdsl.api import check_file
    from archdsl.errors import ArchError

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for pattern in CONCRETE:
        for spec in sorted(glob.glob(str(ROOT / pattern))):
            name = os.path.relpath(spec, ROOT)
            t0 = time.time()
            try:
                g = check_file(spec)
            except ArchError as e:
                rows.append({"spec": name, "status": "not concrete", "message": str(e).splitlines()[0]})
                continue
            small = None
            if _first_shape(g)[1] > 96:  # the ops are checked as well at 96x96, at a fraction of the float64 time
                try:
                    g, small = check_file(spec, input_shape=(3, 96, 96)), (3, 96, 96)
                except ArchError:  # a network tied to its input size (a learned position embedding)
                    pass
            try:
                torch.manual_seed(0)
                m = archdsl.load(spec, input_shape=small).eval()
                randomize(m, torch.Generator().manual_seed(1))
                shape = _first_shape(g)
                x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(2))
                ref = m.double()(x.double())
                row = {"spec": name, "input": list(shape)}
                if not torch.isfinite(ref).all():  # a network whose output is not scale-free (an involution's
                    calibrate(m, x.double())          # kernels are made from its input) needs statistics of its own
                    ref = m(x.double())
                    row["bn_calibrated"] = True
                m = m.float()
                y = m(x)  # float32 on the CPU: how far float32 itself is from float64 for this network
                row["cpu_float32_rel"] = float((y.double() - ref).abs().max() / ref.abs().max())
                dep = archdsl.deploy(m)
                for form, mod in (("train", m), ("deploy", dep)):
                    y = mod.cuda()(x.cuda()).double().cpu()
                    row[f"{form}_rel"] = float((y - ref).abs().max() / ref.abs().max())
                y = archdsl.deploy(m.cuda())(x.cuda()).double().cpu()  # the deploy passes on CUDA tensors
                row["deploy_on_cuda_rel"] = float((y - ref).abs().max() / ref.abs().max())
                if name == "examples/convnext_atto.arch":  # the fast runtime is CPU-only: moved to CUDA it must
                    try:                                    # run as the plain deploy form or say why not
                        auto = archdsl.deploy(m.cpu(), kernels="auto")
                        y = auto.cuda()(x.cuda()).double().cpu()
                        row["auto_rel"] = float((y - ref).abs().max() / ref.abs().max())
                    except Exception as e:  # noqa: BLE001 - recorded, the check reads it
                        row["auto_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                worst = max(row["train_rel"], row["deploy_rel"], row["deploy_on_cuda_rel"], row.get("auto_rel", 0.0))
                ok = worst < max(1e-4, 4 * row["cpu_float32_rel"])  # an ill-conditioned network (RedNet's
                # data-made kernels: 1.2e-3 in float32 on the CPU too) is held to what float32 can do
                ok = ok and "auto_error" not in row
                row["status"] = "equal" if ok else "DIFFERENT"
            except Exception as e:  # noqa: BLE001
                row = {"spec": name, "status": "ERROR", "message": f"{type(e).__name__}: {str(e)[:500]}"}
            row["seconds"] = round(time.time() - t0, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            progress(rows)
            torch.cuda.empty_cache()
    return rows


def write(path: str, rows: list, cuda: list, bench) -> int:
    """The results so far (written after every case: a run cut short keeps what it did)."""
    failed = [r for r in rows + cuda if r["status"] in ("DIFFERENT", "ERROR", "import refused")]
    Path(path).write_text(json.dumps({
        "torch": torch.__version__, "timm": version("timm"), "torchvision": version("torchvision"),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"), "cases": rows, "cuda": cuda, "cuda_bench": bench,
        "failed": len(failed)}, indent=1) + "\n")
    return len(failed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="reference model names to run (default: all)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_reference_models.json"))
    ap.add_argument("--no-cuda", action="store_true", help="skip the GPU part even where CUDA is present")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for case in CASES:
            if a.only and case[3] not in a.only:
                continue
            t0 = time.time()
            try:
                row = run_case(*case, Path(d))
            except Exception as e:  # noqa: BLE001 - recorded as a failure of this case
                row = {"spec": case[0], "model": case[3], "status": "ERROR", "message": f"{type(e).__name__}: {e}"}
            row["seconds"] = round(time.time() - t0, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            write(a.json, rows, [], None)
    cuda = cuda_cases(lambda c: write(a.json, rows, c, None)) if torch.cuda.is_available() and not a.no_cuda else []
    bench = None
    if torch.cuda.is_available() and not a.no_cuda:
        p = subprocess.run([sys.executable, "-m", "archdsl", "bench", str(ROOT / "examples/convnext_atto.arch"),
                            "--device", "cuda"], cwd=tempfile.gettempdir(), capture_output=True, text=True)
        bench = {"rc": p.returncode, "output": (p.stdout + p.stderr)[-3000:]}
        print(bench["output"])
    failed = write(a.json, rows, cuda, bench)
    print(f"{failed} failed; {a.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
