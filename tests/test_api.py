"""The Python API (``fer_robust.load``): one model gives the same probabilities through the API,
``tools/predict.py`` and ``tools/test.py``.

The checkpoint is ``make_run``'s demo run (tiny backbone, random BatchNorm and ARM running
statistics), so a path that used batch statistics or another transform would differ at once.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fer_robust
from fer_robust.cli import predict as predict_cli
from fer_robust.cli import test as test_cli
from fer_robust.data.demo import DEMO_CLASSES
from fer_robust.data.registry import build_dataset
from fer_robust.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fer_robust.deploy.api import FERModel, as_image

from _run_fixture import ROOT, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "demo")


@pytest.fixture(scope="module")
def model(run) -> FERModel:
    return fer_robust.load(run, device="cpu")


def _probs(rows: list[dict]) -> np.ndarray:
    return np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])


def test_importing_the_package_loads_neither_torch_nor_numpy():
    code = ("import sys, fer_robust\n"
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'timm') if m in sys.modules]\n"
            "assert not heavy and callable(fer_robust.load), heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_classes_preprocessing_and_device_come_from_the_checkpoint(model):
    assert model.class_names == list(DEMO_CLASSES) and model.dataset == "demo"
    pre = model.preprocessing
    assert pre["size"] == 48 and pre["interpolation"] == "bilinear"
    assert pre["mean"] == pytest.approx(IMAGENET_MEAN) and pre["std"] == pytest.approx(IMAGENET_STD)
    assert pre["framing"]["scale"] == pytest.approx(1.2)  # the demo faces' measured framing
    assert str(model.device) == "cpu" and "demo" in repr(model)


def test_api_tools_predict_and_tools_test_give_one_demo_checkpoint_the_same_probabilities(
        run, model, tmp_path):
    # tools/test.py: every test image's probabilities.
    table = tmp_path / "test_predictions.csv"
    result = test_cli.main(["--checkpoint", str(run), "--split", "test", "--cpu", "--num-workers",
                            "0", "--out", str(tmp_path / "eval.json"), "--predictions", str(table)])
    with open(table) as fh:
        tested = list(csv.DictReader(fh))
    # The same images, through the API and through tools/predict.py (as lossless PNG files).
    dataset = build_dataset(model._classifier.config.data, "test")
    images = [dataset.load_image(i) for i in range(len(dataset))]
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, image in enumerate(images):
        image.save(crops / f"{i:03d}.png")
    predicted = predict_cli.main(["--checkpoint", str(run), "--device", "cpu", "--no-detect",
                                  str(crops), "--batch-size", "5"])
    api = np.stack([model.predict(image) for image in images])

    assert len(tested) == len(predicted) == len(images) == result["num_samples"] == 28
    assert [r["path"] for r in predicted] == [str(crops / f"{i:03d}.png") for i in range(28)]
    assert api.shape == (28, 7) and np.allclose(api.sum(1), 1.0, atol=1e-5)
    assert np.abs(api - _probs(tested)).max() < 1e-5
    assert np.abs(api - _probs(predicted)).max() < 1e-5
    assert [r["class"] for r in tested] == [DEMO_CLASSES[k] for k in api.argmax(1)]
    assert np.mean(api.argmax(1) == dataset.targets) == pytest.approx(result["accuracy"])


def test_predict_takes_a_pil_image_an_array_a_tensor_or_a_path_alike(model, tmp_path):
    image = build_dataset(model._classifier.config.data, "val").load_image(3)
    image.save(tmp_path / "face.png")
    array = np.array(image)  # a writable copy, for torch.from_numpy
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255  # ToTensor's layout
    reference = model.predict(image)
    for other in (array, array / 255.0, tensor, tensor.double(),
                  torch.from_numpy(array).permute(2, 0, 1),
                  tmp_path / "face.png", str(tmp_path / "face.png")):
        np.testing.assert_allclose(model.predict(other), reference, atol=1e-6)
    gray = image.convert("L")
    np.testing.assert_allclose(model.predict(np.asarray(gray)), model.predict(gray), atol=1e-6)
    batch = model.predict_batch([image, array], hflip=True)
    assert batch.shape == (2, 7) and np.allclose(batch[0], batch[1], atol=1e-6)
    assert not np.allclose(batch[0], reference, atol=1e-4)  # the mirrored face counts


def test_predict_refuses_unreadable_inputs_with_a_clear_message(model):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        model.predict(np.full((20, 20, 3), 200.0))
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        model.predict(np.zeros((20, 20, 2), np.uint8))
    with pytest.raises(TypeError, match="expected a PIL image"):
        model.predict([[0, 1], [2, 3]])
    assert as_image(np.zeros((4, 5, 1), np.uint8)).size == (5, 4)


def test_predict_photo_gives_each_face_its_box_and_the_probabilities_tools_predict_writes(
        model, run, tmp_path):
    pytest.importorskip("dlib", reason="dlib missing: pip install -e '.[faces]'")
    pytest.importorskip("cv2", reason="OpenCV missing: pip install -e '.[faces]'")
    from _faces_fixture import THREE_FACES, scene
    from fer_robust.deploy.faces import box_iou

    image, truth = scene(THREE_FACES)
    faces = model.predict_photo(image)
    assert len(faces) == 3
    for face, box in zip(sorted(faces, key=lambda f: f.box[0]), truth):
        assert box_iou(face.box, box) > 0.75
        assert face.probs.shape == (7,) and face.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert face.label == DEMO_CLASSES[int(face.probs.argmax())]
        assert face.confidence == pytest.approx(float(face.probs.max()))
    image.save(tmp_path / "group.png")
    rows = predict_cli.main(["--checkpoint", str(run), "--device", "cpu",
                             str(tmp_path / "group.png")])
    assert np.abs(np.stack([f.probs for f in faces]) - _probs(rows)).max() < 1e-5
    assert [r["x"] for r in rows] == [round(f.box[0], 1) for f in faces]


def test_an_exported_onnx_file_loads_and_agrees_with_its_run(run, model, tmp_path):
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[export]'")
    from fer_robust.cli import export as export_cli
    out = tmp_path / "model.onnx"
    export_cli.main(["--checkpoint", str(run), "--out", str(out), "--exporter", "legacy",
                     "--batch-sizes", "1"])
    onnx_model = fer_robust.load(out)
    assert onnx_model.class_names == model.class_names and onnx_model.device == "cpu"
    assert onnx_model.preprocessing == model.preprocessing
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 36, 3), np.uint8))
              for i in range(4)]
    assert np.abs(onnx_model.predict_batch(images) - model.predict_batch(images)).max() < 1e-4
    with pytest.raises(ValueError, match="CPU provider"):
        fer_robust.load(out, device="cuda")
