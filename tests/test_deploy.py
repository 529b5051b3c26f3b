"""The deploy form: exact re-parameterization. Deploy output == training-form eval output on random weights and
random BN statistics (fp64 and fp32), published deploy parameter counts, no BN left where a fold is exact,
one conv per merged branch group, pure and idempotent passes, refusals that name the node."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from randomized import randomize

import archdsl
from archdsl.api import check_file, check_text
from archdsl.codegen.deploy import deploy
from archdsl.codegen.module import build_module
from archdsl.ops.conv_nn import DCLS
from archdsl.passes import deploy_graph
from archdsl.printer import format_ir

EXAMPLES = sorted(Path("examples").glob("*.arch"))


def rel_err(a, b) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_deploy_equals_training_form(path):
    g = check_file(path, input_shape=(3, 32, 32))  # fp64 depthwise convs are slow on CPU: keep maps small
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    train = randomize(build_module(g).double())
    dep = deploy(train)
    with torch.no_grad():
        assert rel_err(train(x), dep(x)) < 1e-5
    train32 = randomize(build_module(g))
    with torch.no_grad():
        assert rel_err(train32(x.float()), deploy(train32)(x.float())) < 1e-4
    ops = [n.op for n in dep.graph.nodes()]
    assert "bn" not in ops and "drop_path" not in ops and "dilated_reparam" not in ops


@pytest.mark.parametrize("name,train,deployed", [("unireplknet_a", 4_649_060, 4_437_300),
                                                 ("unireplknet_t", 31_693_420, 31_037_980)])
def test_published_deploy_counts(name, train, deployed):
    g = check_file(f"examples/{name}.arch")
    dg, _ = deploy_graph(g)
    assert (g.total().params, dg.total().params) == (train, deployed)
    m = archdsl.load(f"examples/{name}.arch", form="deploy")
    assert sum(p.numel() for p in m.parameters()) == deployed


def test_one_depthwise_conv_per_merged_group():
    dg, _ = deploy_graph(check_file("examples/unireplknet_a.arch"))
    for blk, sc in dg.scopes.items():
        if sc.kind == "block" and sc.label == "unireplknet_block":
            convs = [n for n in dg.nodes() if n.name.startswith(blk + ".") and n.op == "dwconv"]
            assert len(convs) == 1, (blk, [c.name for c in convs])
    dg, _ = deploy_graph(check_file("examples/replknet_31b.arch"))
    lk = [n for n in dg.nodes() if ".large_kernel." in n.name]
    assert lk and all(n.op == "dwconv" for n in lk)
    assert len(lk) == 24  # one per RepLK block (2 + 2 + 18 + 2)
    assert {n.params.k for n in lk} == {31, 29, 27, 13}


def test_passes_are_pure_and_idempotent():
    g = check_file("examples/unireplknet_a.arch")
    before = format_ir(g)
    dg, reports = deploy_graph(g)
    assert format_ir(g) == before, "a pass mutated its input"
    again, reports2 = deploy_graph(dg)
    assert all(not r.changes for r in reports2), [c for r in reports2 for c in r.changes]
    assert format_ir(again) == format_ir(dg)


def _random_config(space: Path, rng: random.Random) -> dict:
    g = check_file(space, input_shape=(3, 32, 32))
    out = {}
    for c in g.choices:
        d = c.domain()
        if d["type"] == "choice":
            out[c.name] = rng.choice(d["values"])
        elif d["type"] == "int_range":
            out[c.name] = rng.randrange(d["lo"], d["hi"] + 1, d["step"])
        else:
            out[c.name] = rng.uniform(d["lo"], d["hi"])
    return out


@pytest.mark.slow
def test_random_search_space_points_deploy_exactly():
    space = Path("examples/search/convnext_space.arch")
    rng = random.Random(7)
    done = tried = 0
    while done < 6 and tried < 200:
        tried += 1
        try:
            g = check_file(space, _random_config(space, rng), input_shape=(3, 32, 32), strict_overrides=False)
        except archdsl.ArchError:
            continue  # an invalid combination (rejected by the spec's require)
        train = randomize(build_module(g).double(), seed=tried)
        x = torch.randn(2, *g.input_shape.to_json(), dtype=torch.float64)
        with torch.no_grad():
            assert rel_err(train(x), deploy(train)(x)) < 1e-5
        done += 1
    assert done == 6


def test_repconv_dcls_and_custom_branches_deploy_exactly():
    spec = """model m() {
        input(8, 20, 20)
        a: repconv(8)
        b: repconv(16, s=2, groups=2)
        c: dcls(kernel_count=6, size=9)
        d: dilated_reparam(11, kernels=[3, 5], dilations=[4, 2])
        e: parallel { { dwconv(7, bias=false); bn() } { dwconv(3, d=3, bias=false); bn() } bn() identity() }
        f: residual { conv(16, k=1); bn() }
        gap()
        linear(10)
    }"""
    g = check_text(spec, "rep.arch")
    train = randomize(build_module(g).double())
    with torch.no_grad():
        for mod in train.modules():
            if isinstance(mod, DCLS):
                mod.P.uniform_(-4, 4)  # fractional tap positions
    dep = deploy(train)
    x = torch.randn(2, 8, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(train(x), dep(x)) < 1e-9
    ops = {n.name: n.op for n in dep.graph.nodes()}
    assert ops["a"] == "conv" and ops["c"] == "conv" and ops["d"] == "dwconv"
    assert [n for n in ops if n.startswith("e")] == ["e.0.0"] and ops["e.0.0"] == "dwconv"
    assert "bn" not in ops.values() and "add" not in ops.values()


def test_refusals_name_the_node():
    g = check_text("model m() { input(8,16,16) x: parallel { conv(8, k=3); { conv(8, k=1); relu() } }\n"
                   "y: parallel { conv(8, k=3, groups=4); conv(8, k=1) } }", "r.arch")
    _, reports = deploy_graph(g)
    lines = [c for r in reports for c in r.changes if c.startswith("refused")]
    assert any("'x.1.1'" in c and "relu" in c and "r.arch:1:" in c for c in lines), lines
    assert any("'y.1'" in c and "groups" in c for c in lines), lines


def test_a_skip_from_before_the_branch_is_no_refusal():
    """ResNet's add(conv branch, skip): the skip comes from before the branch, so nothing non-linear sits between
    a shared input and the merge, and no merge was possible: no 'not linear' refusal (it named the skip's source)."""
    g = check_file("docs/examples/resnet50.arch")
    _, reports = deploy_graph(g)
    assert not [c for r in reports for c in r.changes if "not linear" in c]


def test_compile_deploy_with_weights_roundtrip(tmp_path):
    g = check_file("examples/unireplknet_a.arch", input_shape=(3, 32, 32))
    train = randomize(build_module(g))
    ckpt = tmp_path / "trained.pt"
    torch.save(train.state_dict(), ckpt)
    out = tmp_path / "uni_deploy.py"
    r = subprocess.run([sys.executable, "-m", "archdsl", "compile", "examples/unireplknet_a.arch", "--input",
                        "3x32x32", "--deploy", "--weights", str(ckpt), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import importlib.util

    spec = importlib.util.spec_from_file_location("uni_deploy", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.model()
    model.load_state_dict(torch.load(out.with_suffix(".pt"), weights_only=True))
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == 4_437_300 - 2 * 0  # same structure as check --deploy
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(train(x), model(x)) < 1e-4


def test_deploy_form_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = archdsl.load("examples/unireplknet_a.arch", form="deploy", input_shape=(3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    ep = torch.export.export(m, (x,))
    onx = torch.onnx.export(ep, (x,), dynamo=True, verbose=False, optimize=False)
    f = tmp_path / "d.onnx"
    onx.save(str(f))
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-4)


def test_show_deploy_reports_each_pass_and_debug_dumps_ir():
    r = subprocess.run([sys.executable, "-m", "archdsl", "show", "examples/unireplknet_a.arch", "--deploy", "--debug"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "# pass fold_bn:" in r.stdout and "# pass merge_branches:" in r.stdout
    assert "re-parameterized dilated_reparam 'stages.1.blocks.0.mixer' into one dwconv" in r.stdout
    assert r.stdout.count("# model unireplknet_a") == 9  # the IR after each of the 8 passes, then the result


def test_pass_changes_are_report_lines_with_fields():
    """Each change a pass reports is its report line (the CLI and JSON print it) and carries what happened as
    data (the viz reads it); copies and pickles keep both."""
    import copy
    import json
    import pickle

    from archdsl.api import check_text
    from archdsl.passes import Change

    g = check_text("model m() {\n    input(3, 8, 8)\n    conv(8, k=3)\n    bn()\n    relu()\n}\n")
    _, reports = deploy_graph(g)
    (c,) = [c for r in reports for c in r.changes]
    assert isinstance(c, Change) and c.kind == "fold_bn" and c.dst in g and c.src in g and c.op == "conv"
    assert c == f"folded bn '{c.src}' into conv '{c.dst}'" and json.loads(json.dumps([c])) == [str(c)]
    for again in (copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        assert again == c and again.fields() == c.fields()


@pytest.mark.parametrize("spec", ["examples/baselines/resnet.arch", "examples/baselines/unireplknet.arch",
                                  "examples/baselines/mobilenetv2.arch", "examples/literature/regnet.arch"])
def test_the_deploy_passes_keep_the_models_device(spec):
    """A model on a GPU deploys there: every tensor the passes make (a folded bias, a BN without affine, an
    identity kernel) is made on the weights' device. The meta device stands in for CUDA (mixing it with CPU
    tensors fails as CUDA does; benchmarks/reference_models.py runs the real thing on a GPU machine)."""
    root = Path(__file__).resolve().parents[1]
    m = archdsl.load(root / spec, input_shape=(3, 32, 32)).to("meta").eval()
    dep = archdsl.deploy(m)
    assert all(t.device.type == "meta" for t in dep.state_dict().values())
    assert dep(torch.empty(1, 3, 32, 32, device="meta")).shape[0] == 1
