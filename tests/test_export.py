"""``tools/export.py --format onnx`` and ``tools/predict.py --onnx``.

A run whose BatchNorm statistics and ARM running affinity hold random values (``make_run``)
makes the check meaningful: a graph that used batch statistics, or dropped a running estimate,
would differ from PyTorch at once.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from _extras import require_extra
from _run_fixture import ROOT, make_run



onnx = require_extra("onnx", "export")
require_extra("onnxruntime", "export")
require_extra("onnxscript", "export")

from fer_robust.cli import export as export_cli  # noqa: E402
from fer_robust.cli import predict as predict_cli  # noqa: E402
from fer_robust.deploy.classifiers import OnnxClassifier  # noqa: E402
from fer_robust.deploy.extras import MissingExtraError  # noqa: E402
from fer_robust.deploy.onnx_export import StaticAdaptivePool2d, check_onnx  # noqa: E402
from fer_robust.engine.inference import load_trained_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run and its ONNX export, checked at batch sizes 1 and 32. The TorchScript-based
    exporter takes about 2 s here; the default torch.export-based one 30-40 s on this 2-core
    machine, so its own test is marked slow."""
    run = make_run(tmp_path_factory.mktemp("runs") / "demo")
    report = export_cli.main(["--checkpoint", str(run), "--format", "onnx", "--exporter", "legacy"])
    return run, run / "model.onnx", report


def test_export_matches_pytorch_on_validation_images_at_batch_1_and_32(exported):
    run, path, report = exported
    assert report["passed"] and report["images"] == "val split" and report["num_images"] == 32
    assert set(report["batch_sizes"]) == {"1", "32"}
    for row in report["batch_sizes"].values():
        assert row["max_abs_logit_diff"] < 1e-4 and row["same_predictions"]
        assert row["max_abs_embedding_diff"] < 1e-4
    assert json.loads((run / "model.onnx.check.json").read_text())["passed"]


def test_exported_graph_has_a_dynamic_batch_axis_no_mim_head_and_its_metadata(exported):
    run, path, _ = exported
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 48, 48]
    assert [o.name for o in model.graph.output] == ["logits", "embedding"]
    assert not [t.name for t in model.graph.initializer if "mim" in t.name.lower()]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["fer_robust"])
    assert meta["classes"] == json.loads((run / "classes.json").read_text())
    assert meta["img_size"] == 48 and meta["dataset"] == "demo"


def test_check_fails_when_the_graph_and_the_model_differ(exported):
    run, path, _ = exported
    _, model, _, _ = load_trained_model(run)
    with torch.no_grad():
        model.global_branch.pool.running_affinity.add_(0.5)  # not what was exported
    report = check_onnx(path, model, torch.randn(4, 3, 48, 48), batch_sizes=(1, 4))
    assert not report["passed"] and "batch 1" in report["failures"][0]


@pytest.mark.slow
def test_default_torch_export_based_exporter_matches_pytorch(exported, tmp_path):
    run, _, _ = exported
    out = tmp_path / "dynamo.onnx"
    report = export_cli.main(["--checkpoint", str(run), "--out", str(out)])
    assert report["passed"] and report["exporter"] == "dynamo"
    assert max(r["max_abs_logit_diff"] for r in report["batch_sizes"].values()) < 1e-4
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert not [t.name for t in graph.initializer if "mim" in t.name.lower()]


def test_onnx_predict_runs_without_torch_and_agrees_with_pytorch(exported, tmp_path):
    run, path, _ = exported
    from fer_robust.data.demo import save_demo_as_image_folder
    save_demo_as_image_folder(tmp_path / "crops", per_class=2, img_size=64, splits=("test",))
    ours = predict_cli.main(["--checkpoint", str(run), "--no-detect", str(tmp_path / "crops"),
                             "--tta", "hflip"])
    # torch and the training stack cannot be imported in this process; with the faces extra the
    # same process also finds and classifies the faces of a photo.
    from _faces_fixture import THREE_FACES, scene
    scene(THREE_FACES)[0].save(tmp_path / "group.png")
    code = ("import importlib.util, sys\n"
            "for name in ('torch', 'torchvision', 'timm', 'accelerate', 'faiss', 'sklearn'):\n"
            "    sys.modules[name] = None\n"
            "from fer_robust.cli.predict import main\n"
            f"main(['--onnx', {str(path)!r}, '--no-detect', {str(tmp_path / 'crops')!r}, "
            f"'--tta', 'hflip', '--out', {str(tmp_path / 'onnx.csv')!r}])\n"
            "if importlib.util.find_spec('dlib') and importlib.util.find_spec('cv2'):\n"
            f"    assert len(main(['--onnx', {str(path)!r}, {str(tmp_path / 'group.png')!r}])) == 3\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "onnx.csv") as fh:
        theirs = list(csv.DictReader(fh))
    assert [r["path"] for r in theirs] == [r["path"] for r in ours]
    p_ours = np.array([[v for k, v in r.items() if k.startswith("p_")] for r in ours])
    p_theirs = np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in theirs])
    assert np.abs(p_ours - p_theirs).max() < 1e-4
    assert [r["class"] for r in theirs] == [r["class"] for r in ours]


@pytest.mark.parametrize("pool", [torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveAvgPool2d])
@pytest.mark.parametrize("side, out", [(3, 2), (7, 3), (5, 2), (4, 2), (6, (2, 3))])
def test_static_adaptive_pooling_gives_pytorchs_bins(pool, side, out):
    x = torch.randn(2, 4, side, side + 1)
    torch.testing.assert_close(StaticAdaptivePool2d(pool(out))(x), pool(out)(x), rtol=0,
                               atol=1e-6)  # max: equal; mean: summation order


@pytest.mark.parametrize("overrides", [
    # Output stride 16 at 48 px (the noise benchmark's geometry): the local branch pools 2x2
    # regions over a 3x3 map, which neither exporter translates as adaptive pooling.
    ["model.output_stride=16"],
    ["model.arch=baseline", "model.pooling=avg"],
    ["model.arch=arm"],
], ids=["two_branch_3x3_map", "baseline", "arm"])
def test_every_architecture_exports_and_matches(tmp_path, overrides):
    run = make_run(tmp_path / "run", overrides)
    report = export_cli.main(["--checkpoint", str(run), "--exporter", "legacy",
                              "--batch-sizes", "1", "5"])
    assert report["passed"]


def test_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[export\]'"):
        OnnxClassifier(exported[1])
