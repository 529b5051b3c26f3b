"""Issue 22: `archdsl weights import`: a state_dict of another implementation of the same network, written here the
usual way in plain PyTorch with its own names and registration order, matched onto the model of a spec; after the
import the outputs are equal. A shuffled checkpoint and one of another architecture are refused, naming tensors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl
from archdsl.cli import main
from archdsl.weights_import import WeightsImportError, import_state_dict

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "docs" / "examples" / "resnet50.arch"
CONVNEXT = ROOT / "examples" / "convnext_atto.arch"
R_SET = {"layers": [1, 2, 1, 1], "widths": [8, 16, 16, 32], "num_classes": 10}
C_SET = {"depths": [1, 2, 1, 1], "dims": [8, 16, 32, 64], "num_classes": 10}
SHAPE = (3, 32, 32)


# ---------------------------------------------------------------- the other implementations, written as usual

class Bottleneck(nn.Module):  # torchvision's names and order
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
        self.downsample = None
        if stride != 1 or cin != width * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(width * 4))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, layers, widths, num_classes):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        cin, blocks = 64, []
        for i, (n, w) in enumerate(zip(layers, widths)):
            stage = []
            for j in range(n):
                stage.append(Bottleneck(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w * 4
            blocks.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


class LayerNorm2d(nn.Module):  # the ConvNeXt authors' channels-first LayerNorm
    def __init__(self, c: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, 1e-6).permute(0, 3, 1, 2)


class Block(nn.Module):  # the authors' block with 1x1 convs for the MLP: its gamma is listed before its children
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1, self.pwconv2 = nn.Conv2d(dim, 4 * dim, 1), nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.gamma.view(1, -1, 1, 1) * y


class ConvNeXt(nn.Module):  # the authors' layout: every downsampling layer registered before the stages
    def __init__(self, depths, dims, num_classes):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.stages = nn.ModuleList([nn.Sequential(*[Block(d) for _ in range(n)]) for n, d in zip(depths, dims)])
        self.norm, self.head = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for ds, st in zip(self.downsample_layers, self.stages):
            x = st(ds(x))
        return self.head(self.norm(x.mean((2, 3))))


CONVNEXT_MAP = [r"downsample_layers\.0\.0\.(.*)=stem.conv.\1", r"downsample_layers\.0\.1\.(.*)=stem.norm.\1",
                r"downsample_layers\.(\d)\.0\.(.*)=stages.\1.downsample.norm.\2",
                r"downsample_layers\.(\d)\.1\.(.*)=stages.\1.downsample.conv.\2",
                r"stages\.(\d)\.(\d+)\.gamma=stages.\1.blocks.\2.layer_scale.gamma"]


TIMM_CONVNEXT_MAP = [r"stem\.0\.(.*)=stem.conv.\1", r"stem\.1\.(.*)=stem.norm.\1",
                     r"stages\.(\d)\.downsample\.0\.(.*)=stages.\1.downsample.norm.\2",
                     r"stages\.(\d)\.downsample\.1\.(.*)=stages.\1.downsample.conv.\2"]


def _randomized(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if k.endswith("running_var") else
                        torch.randn(t.shape, generator=g) * 0.2)
    return m.eval()


def _same_outputs(ours: nn.Module, theirs: nn.Module) -> None:
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the tests

def test_a_resnet_written_the_usual_way_imports_in_order():
    theirs = _randomized(ResNet(R_SET["layers"], R_SET["widths"], 10), 0)
    ours = archdsl.load(RESNET, R_SET, input_shape=SHAPE)
    sd, report = import_state_dict(ours, theirs.state_dict())
    assert not report.missing and not report.unused and all(v[1] == "order" for v in report.matched.values())
    assert report.matched["stages.0.blocks.0.res.shortcut.conv.weight"][0] == "layer1.0.downsample.0.weight"
    ours.load_state_dict(sd)
    _same_outputs(ours, theirs)


def test_the_authors_convnext_imports_with_a_name_map_and_reshapes():
    theirs = _randomized(ConvNeXt(C_SET["depths"], C_SET["dims"], 10), 1)
    ours = archdsl.load(CONVNEXT, C_SET, input_shape=SHAPE)
    parting = (r"the orders part at tensor 5 .*: the model.s stages\.0\.blocks\.0\.conv_dw\.weight .* against the "
               r"checkpoint.s downsample_layers\.1\.0\.weight .* map those names")
    with pytest.raises(WeightsImportError, match=parting):
        import_state_dict(ours, theirs.state_dict())  # order alone: the first stage's LayerNorm is elsewhere
    sd, report = import_state_dict(ours, theirs.state_dict(), CONVNEXT_MAP)
    assert report.matched["stages.1.blocks.1.layer_scale.gamma"] == ("stages.1.1.gamma", "map")
    # the authors' 1x1 conv MLP weights (4C x C x 1 x 1) become the spec's linear weights (4C x C)
    assert report.reshaped["stages.0.blocks.0.mlp.fc1.weight"] == ((32, 8, 1, 1), (32, 8))
    ours.load_state_dict(sd)
    _same_outputs(ours, theirs)


def test_a_shuffled_checkpoint_is_refused_naming_where_the_orders_part():
    sd = ResNet(R_SET["layers"], R_SET["widths"], 10).state_dict()
    items = list(sd.items())
    random.Random(0).shuffle(items)
    with pytest.raises(WeightsImportError, match=r"the orders part at tensor \d+ .*: the model's \S+ \(.*\) against "
                                                 r"the checkpoint's \S+ \("):
        import_state_dict(archdsl.load(RESNET, R_SET, input_shape=SHAPE), dict(items))


def test_a_checkpoint_of_another_architecture_is_refused():
    other = ResNet([1, 1, 1, 1], R_SET["widths"], 10).state_dict()  # one block fewer in stage 2
    with pytest.raises(WeightsImportError, match="orders part|no match|left over"):
        import_state_dict(archdsl.load(RESNET, R_SET, input_shape=SHAPE), other)
    wider = ResNet(R_SET["layers"], [16, 16, 16, 32], 10).state_dict()
    with pytest.raises(WeightsImportError, match=r"layer1\.0\.conv1\.weight \(16, 64, 1, 1\)"):
        import_state_dict(archdsl.load(RESNET, R_SET, input_shape=SHAPE), wider)


def test_missing_tensors_are_an_error_unless_allowed():
    sd = ResNet(R_SET["layers"], R_SET["widths"], 10).state_dict()
    del sd["fc.weight"], sd["fc.bias"]
    ours = archdsl.load(RESNET, R_SET, input_shape=SHAPE)
    with pytest.raises(WeightsImportError, match=r"2 of the model's tensors have no match \(first: head\.fc\.weight\)"):
        import_state_dict(ours, sd)
    out, report = import_state_dict(ours, sd, allow_missing=True)
    assert report.missing == ["head.fc.weight", "head.fc.bias"] and torch.equal(out["head.fc.bias"],
                                                                                  ours.state_dict()["head.fc.bias"])


def test_bad_name_maps_are_named():
    ours = archdsl.load(CONVNEXT, C_SET, input_shape=SHAPE)
    sd = ConvNeXt(C_SET["depths"], C_SET["dims"], 10).state_dict()
    with pytest.raises(WeightsImportError, match=r"name map rule '\(\[': not a regular expression"):
        import_state_dict(ours, sd, ["([=x"])
    with pytest.raises(WeightsImportError, match=r"-> stem\.cnv\.weight, which the model does not have \(did you mean "
                                                 r"stem\.conv\.weight\?\)"):
        import_state_dict(ours, sd, [r"downsample_layers\.0\.0\.(.*)=stem.cnv.\1"])


def test_the_command_line_writes_weights_that_archdsl_load_reads(tmp_path, capsys):
    theirs = _randomized(ConvNeXt(C_SET["depths"], C_SET["dims"], 10), 2)
    ckpt, out, rep, rules = tmp_path / "authors.pth", tmp_path / "w.pt", tmp_path / "r.json", tmp_path / "map.txt"
    torch.save({"model": theirs.state_dict(), "epoch": 300}, ckpt)  # as the authors' checkpoints are
    rules.write_text("# the authors' ConvNeXt layout\n" + "\n".join(CONVNEXT_MAP[:2]) + "\n")
    sets = [a for k, v in C_SET.items() for a in ("--set", f"{k}={v}")]
    argv = ["weights", "import", str(CONVNEXT), str(ckpt), "-o", str(out), "--input", "3x32x32", *sets,
            "--map-file", str(rules), *[a for r in CONVNEXT_MAP[2:] for a in ("--map", r)], "--report", str(rep)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "downsample_layers.1.0.weight -> stages.1.downsample.norm.weight (map)" in said
    assert "pwconv1.weight -> stages.0.blocks.0.mlp.fc1.weight (order+reshape)" in said
    assert said.strip().endswith(f"0 of ours missing, 0 of theirs unused; wrote {out}")
    assert json.loads(rep.read_text())["counts"]["missing"] == 0
    _same_outputs(archdsl.load(CONVNEXT, C_SET, input_shape=SHAPE, weights=out), theirs)
    # without the map: exit 1 and one line naming the tensors
    assert main(argv[:argv.index("--map-file")] + []) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the orders part" in err and "Traceback" not in err


def test_timms_convnext_layout_needs_one_rule_for_the_gammas():
    """The docs' example (docs/weights.md): timm's ConvNeXt lists each block's gamma before its children; its
    names and shapes in timm's order (stem.0/1, stages.i.downsample.0/1, blocks, head.norm, head.fc)."""
    dims, depths = [8, 16, 32, 64], [1, 2, 1, 1]
    names = [("stem.0.weight", (8, 3, 4, 4)), ("stem.0.bias", (8,)), ("stem.1.weight", (8,)), ("stem.1.bias", (8,))]
    for i, (d, n) in enumerate(zip(dims, depths)):
        if i:
            names += [(f"stages.{i}.downsample.0.weight", (dims[i - 1],)), (f"stages.{i}.downsample.0.bias",
                                                                              (dims[i - 1],)),
                      (f"stages.{i}.downsample.1.weight", (d, dims[i - 1], 2, 2)), (f"stages.{i}.downsample.1.bias",
                                                                                    (d,))]
        for j in range(n):
            b = f"stages.{i}.blocks.{j}"
            names += [(f"{b}.gamma", (d,)), (f"{b}.conv_dw.weight", (d, 1, 7, 7)), (f"{b}.conv_dw.bias", (d,)),
                      (f"{b}.norm.weight", (d,)), (f"{b}.norm.bias", (d,)), (f"{b}.mlp.fc1.weight", (4 * d, d)),
                      (f"{b}.mlp.fc1.bias", (4 * d,)), (f"{b}.mlp.fc2.weight", (d, 4 * d)), (f"{b}.mlp.fc2.bias", (d,))]
    names += [("head.norm.weight", (64,)), ("head.norm.bias", (64,)), ("head.fc.weight", (10, 64)),
              ("head.fc.bias", (10,))]
    timm_like = {k: torch.randn(s) for k, s in names}
    ours = archdsl.load(ROOT / "examples" / "convnext_tiny.arch", {"depths": depths, "dims": dims, "num_classes": 10},
                        input_shape=SHAPE)
    rule = r"stages\.(\d)\.blocks\.(\d+)\.gamma=stages.\1.blocks.\2.layer_scale.gamma"
    sd, report = import_state_dict(ours, timm_like, [rule])
    renamed = {ours_name: theirs for ours_name, (theirs, _) in report.matched.items()}
    assert renamed["stages.1.downsample.conv.weight"] == "stages.1.downsample.1.weight"
    assert renamed["stages.1.blocks.1.mlp.fc2.bias"] == "stages.1.blocks.1.mlp.fc2.bias"
    assert all(torch.equal(sd[k], timm_like[v]) for k, v in renamed.items())
    # timm's files on the Hub are .safetensors, sorted by name: most names are the spec's, the rest are named
    sorted_like = dict(sorted(timm_like.items()))
    with pytest.raises(WeightsImportError, match="not named alike, and the checkpoint lists its tensors sorted"):
        import_state_dict(ours, sorted_like, [rule], ordered=False)
    sd, report = import_state_dict(ours, sorted_like, [rule, *TIMM_CONVNEXT_MAP], ordered=False)
    assert {v[1] for v in report.matched.values()} == {"map", "name"}
    assert all(torch.equal(sd[k], timm_like[v]) for k, (v, _) in report.matched.items())


def test_a_safetensors_checkpoint_imports_by_name_and_order_lost_to_sorting_is_said(tmp_path, capsys):
    """timm's weights on the Hugging Face Hub are .safetensors files (read without pickle), which store the tensors
    sorted by name: tensors named as the model's match by name; where order would be needed, the refusal says
    that the file's order is lost."""
    safetensors = pytest.importorskip("safetensors.torch")
    ours = archdsl.load(CONVNEXT, C_SET, input_shape=SHAPE)
    same = _randomized(archdsl.load(CONVNEXT, C_SET, input_shape=SHAPE), 4)
    ckpt, out = tmp_path / "model.safetensors", tmp_path / "w.pt"
    safetensors.save_file({k: v.contiguous() for k, v in same.state_dict().items()}, str(ckpt))
    sets = [a for k, v in C_SET.items() for a in ("--set", f"{k}={v}")]
    assert main(["weights", "import", str(CONVNEXT), str(ckpt), "-o", str(out), "--input", "3x32x32", *sets]) == 0
    _same_outputs(archdsl.load(CONVNEXT, C_SET, input_shape=SHAPE, weights=out), same)
    del ours
    theirs = ResNet(R_SET["layers"], R_SET["widths"], 10).state_dict()
    safetensors.save_file({k: v.contiguous() for k, v in theirs.items()}, str(ckpt))
    r_sets = [a for k, v in R_SET.items() for a in ("--set", f"{k}={v}")]
    capsys.readouterr()
    assert main(["weights", "import", str(RESNET), str(ckpt), "-o", str(out), *r_sets]) == 1
    err = capsys.readouterr().err
    assert "are not named alike, and the checkpoint lists its tensors sorted by name (a .safetensors file does)" in err
    ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert main(["weights", "import", str(RESNET), str(ckpt), "-o", str(out), *r_sets]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {ckpt}" in err and err.count("\n") == 1 and "Traceback" not in err
