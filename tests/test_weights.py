"""Pretrained weights: the face checkpoints FER work starts from load into timm ResNets, pickles
stay behind model.allow_pickle, and a paper recipe without weights is a config error, not a silent
training from scratch.

The checkpoint files are fakes built here in the exact layouts of the real ones:
``ijba_res18_naive.pth.tar`` (DREAM's MS-Celeb-1M ResNet-18, as SCN loads it) and
``resnet50_ft_weight.pkl`` (VGGFace2-pytorch's Caffe-converted ResNet-50, as EAC loads it; here a
tiny bottleneck ResNet with the same naming, so no 100 MB file is written).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download weights

import dataclasses
import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.models.resnet import Bottleneck, ResNet

from fer_robust.config import ConfigError, ModelConfig
from fer_robust.config_io import save_config
from fer_robust.models import Backbone, PretrainedFileError, build_model, load_pretrained_file
from fer_robust.models.weights import read_state_dict
from fer_robust.validation import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PAPER_CONFIGS = ["_paper_defaults.yaml", "rafdb.yaml", "affectnet7.yaml", "affectnet8.yaml",
                 "ferplus.yaml", "sfew.yaml", "fer2013.yaml"]
NUM_IDENTITIES = 10  # the real files have 87,020 (DREAM) and 8,631 (VGGFace2) identities


def _weights(state: dict) -> dict:
    """A state dict without BatchNorm's num_batches_tracked (the 2017-2018 files predate it)."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _tiny_bottleneck_resnet(**kw) -> ResNet:
    """ResNet-50's structure (bottlenecks, a downsample in each stage's first block) with one block
    per stage and narrow channels: the same key names as resnet50 in a ~140k-parameter model."""
    return ResNet(Bottleneck, [1, 1, 1, 1], channels=(8, 16, 32, 64), **kw)


# --------------------------------------------------------------------------------------------------
# The two checkpoint layouts
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ijba_file(tmp_path_factory) -> tuple[Path, dict]:
    """``ijba_res18_naive.pth.tar`` as DREAM saved it: a legacy-format ``torch.save`` of
    ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}``, keys ``module.``-prefixed
    (DataParallel), the ResNet-18 body, then ``feature`` (512 -> 256) and an identity ``fc``."""
    torch.manual_seed(18)
    body = _weights(timm.create_model("resnet18", num_classes=0).state_dict())
    state = OrderedDict((f"module.{k}", v.clone()) for k, v in body.items())
    state["module.feature.weight"] = torch.randn(256, 512)
    state["module.feature.bias"] = torch.randn(256)
    state["module.fc.weight"] = torch.randn(NUM_IDENTITIES, 256)
    state["module.fc.bias"] = torch.randn(NUM_IDENTITIES)
    path = tmp_path_factory.mktemp("msceleb") / "ijba_res18_naive.pth.tar"
    torch.save({"epoch": 60, "arch": "resnet18", "state_dict": state, "best_prec1": 97.1,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9,
                                                             "params": [0, 1]}]}},
               path, _use_new_zipfile_serialization=False)
    return path, body


@pytest.fixture
def vggface2_file(tmp_path) -> tuple[Path, dict]:
    """``resnet50_ft_weight.pkl`` as VGGFace2-pytorch converted it: a protocol-2 pickle of
    ``{name: float32 numpy array}``, torchvision ResNet names, an identity ``fc``, no prefix."""
    torch.manual_seed(50)
    source = _tiny_bottleneck_resnet(num_classes=NUM_IDENTITIES)
    arrays = {k: v.numpy().copy() for k, v in _weights(source.state_dict()).items()}
    path = tmp_path / "resnet50_ft_weight.pkl"
    with open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    return path, arrays


def test_ijba_res18_naive_loads_into_timm_resnet18_with_weights_only(ijba_file):
    path, body = ijba_file
    model = timm.create_model("resnet18", num_classes=0, global_pool="")
    report = load_pretrained_file(model, path)  # allow_pickle off: read with weights_only=True

    assert report.format == "torch ['state_dict']"
    assert "MS-Celeb-1M" in report.layout and f"{NUM_IDENTITIES} identities" in report.layout
    assert report.stripped_prefix == "module."
    assert sorted(report.dropped_classifier) == ["fc.bias", "fc.weight", "feature.bias",
                                                 "feature.weight"]
    assert (report.missing, report.unexpected) == ([], [])
    assert len(report.loaded) == len(body) == 100
    loaded = model.state_dict()
    for key in ("conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(loaded[key], body[key])
    assert report.summary().splitlines()[0].endswith(
        "100 matched, 0 missing, 0 unexpected, 4 head tensors dropped (prefix stripped: module.)")


def test_backbone_records_where_its_weights_came_from(ijba_file):
    path, body = ijba_file
    backbone = Backbone("resnet18", 32, pretrained_file=str(path))
    torch.testing.assert_close(backbone.model.state_dict()["layer3.1.conv2.weight"],
                               body["layer3.1.conv2.weight"])
    assert backbone.pretrained_source.startswith(
        f"file:{path} (100/100 tensors, format torch ['state_dict'], MS-Celeb-1M ResNet")
    assert Backbone("test_resnet", 32).pretrained_source == "none (trained from scratch)"


def test_vggface2_pickle_of_numpy_arrays_loads_with_allow_pickle(vggface2_file):
    path, arrays = vggface2_file
    model = _tiny_bottleneck_resnet(num_classes=0, global_pool="")
    report = load_pretrained_file(model, path, allow_pickle=True)

    assert report.format == "pickle, numpy arrays"
    assert report.layout == ("ResNet, VGGFace2-pytorch layout (10 identities; Caffe-style: "
                             "bottlenecks stride in conv1, timm's in conv2)")
    assert report.stripped_prefix == ""
    assert sorted(report.dropped_classifier) == ["fc.bias", "fc.weight"]
    # The file has no num_batches_tracked; those are bookkeeping and do not count as missing.
    assert (report.missing, report.unexpected) == ([], [])
    assert len(report.loaded) == len(arrays) - 2
    loaded = model.state_dict()
    for key in ("conv1.weight", "layer3.0.conv1.weight", "layer4.0.downsample.1.running_mean"):
        torch.testing.assert_close(loaded[key], torch.from_numpy(arrays[key]))


def test_pickle_without_allow_pickle_is_refused_in_one_line_naming_the_flag(vggface2_file):
    path, _ = vggface2_file
    model = _tiny_bottleneck_resnet(num_classes=0, global_pool="")
    before = model.state_dict()["conv1.weight"].clone()
    with pytest.raises(PretrainedFileError) as err:
        load_pretrained_file(model, path)
    message = str(err.value)
    assert "\n" not in message
    assert "resnet50_ft_weight.pkl" in message and "arbitrary code" in message
    assert "model.allow_pickle=true" in message
    torch.testing.assert_close(model.state_dict()["conv1.weight"], before)  # nothing loaded
    with pytest.raises(PretrainedFileError, match="model.allow_pickle=true"):
        Backbone("test_resnet", 32, pretrained_file=str(path))


def test_torch_checkpoint_weights_only_refuses_loads_only_with_allow_pickle(tmp_path):
    state = _weights(timm.create_model("test_resnet", num_classes=0).state_dict())
    path = tmp_path / "with_numpy_scalar.pth.tar"
    torch.save({"state_dict": state, "best_prec1": np.float64(71.5)}, path)

    with pytest.raises(PretrainedFileError, match=r"weights_only=True\) refused it \(Unsupported "
                                                  r"global: .*numpy.*model\.allow_pickle=true"):
        read_state_dict(path)
    model = timm.create_model("test_resnet", num_classes=0, global_pool="")
    report = load_pretrained_file(model, path, allow_pickle=True)
    assert report.format == "torch (unrestricted pickle) ['state_dict']"
    assert report.missing == []


def test_timm_resnet50_names_every_vggface2_tensor():
    """VGGFace2-pytorch's ResNet-50 (models/resnet.py): stem conv1/bn1, stages of 3, 4, 6, 3
    bottlenecks with conv1-3/bn1-3, a downsample (conv, bn) in each stage's first block, fc to
    8,631 identities. timm's resnet50 has the same names and shapes, so the real file loads."""
    bn = ("weight", "bias", "running_mean", "running_var")
    names = {"conv1.weight": (64, 3, 7, 7), **{f"bn1.{p}": (64,) for p in bn},
             "fc.weight": (8631, 2048), "fc.bias": (8631,)}
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            block = f"layer{stage}.{b}"
            names[f"{block}.conv1.weight"] = (planes, inplanes, 1, 1)
            names[f"{block}.conv2.weight"] = (planes, planes, 3, 3)
            names[f"{block}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for i, width in ((1, planes), (2, planes), (3, planes * 4)):
                names.update({f"{block}.bn{i}.{p}": (width,) for p in bn})
            if b == 0:
                names[f"{block}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                names.update({f"{block}.downsample.1.{p}": (planes * 4,) for p in bn})
            inplanes = planes * 4
    with torch.device("meta"):  # shapes only, no 100 MB of weights
        timm_state = _weights(timm.create_model("resnet50", num_classes=8631).state_dict())
    assert {k: tuple(v.shape) for k, v in timm_state.items()} == names


def test_file_matching_too_little_of_the_model_fails_naming_file_and_format(tmp_path):
    state = _weights(_tiny_bottleneck_resnet(num_classes=0).state_dict())
    stem_only = {f"module.{k}": v for k, v in state.items() if not k.startswith("layer")}
    path = tmp_path / "stem_only.pth.tar"
    torch.save({"state_dict": stem_only}, path)
    model = _tiny_bottleneck_resnet(num_classes=0, global_pool="")
    with pytest.raises(PretrainedFileError,
                       match=r"stem_only.pth.tar \(torch \['state_dict'\]\) does not match the "
                             r"architecture: only 5 of"):
        load_pretrained_file(model, path)


# --------------------------------------------------------------------------------------------------
# Paper recipes expect pretrained weights
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_without_pretrained_file_is_a_one_line_error(name):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / name)
    message = str(err.value)
    assert "\n" not in message and "'model.pretrained_file'" in message
    assert "model.pretrained_file=/path/to/weights" in message
    assert "model.pretrained_file=none to train from scratch" in message


def test_paper_config_extends_the_defaults_that_expect_weights():
    for name in PAPER_CONFIGS[1:]:
        assert "_base_: _paper_defaults.yaml" in (CONFIGS / name).read_text(), name
    assert load_config(CONFIGS / "rafdb.yaml",
                       ["model.pretrained_file=none"]).model.expects_pretrained


@pytest.mark.parametrize("override", ["model.pretrained_file=none", "model.pretrained_file=None",
                                      "model.pretrained_file=NONE", "model.pretrained=true",
                                      "model.pretrained_file={tmp}/ijba_res18_naive.pth.tar"])
def test_paper_config_loads_with_weights_or_the_explicit_opt_out(override, tmp_path):
    (tmp_path / "ijba_res18_naive.pth.tar").write_bytes(b"weights")
    cfg = load_config(CONFIGS / "rafdb.yaml", [override.format(tmp=tmp_path)])
    assert cfg.model.expects_pretrained


@pytest.mark.parametrize("value", ["null", "~", "''"])
def test_yaml_null_or_empty_is_not_the_opt_out(value):
    with pytest.raises(ConfigError, match="model.pretrained_file"):
        load_config(CONFIGS / "rafdb.yaml", [f"model.pretrained_file={value}"])


def test_defaults_do_not_expect_weights():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert (cfg.model.expects_pretrained, cfg.model.allow_pickle, cfg.model.pretrained_file) == \
        (False, False, "")


def test_opt_out_builds_a_model_from_scratch():
    cfg = ModelConfig(backbone="test_resnet", pretrained_file="None", expects_pretrained=True)
    model = build_model(cfg, 7, 32)
    assert model.backbone.load_report is None
    assert model.backbone.pretrained_source == "none (trained from scratch)"


def test_evaluation_of_a_paper_run_never_reads_the_pretrained_file(tmp_path):
    """tools/test.py rebuilds the model from the run's config: the weight file it was trained from
    may be gone, and the trained weights replace it anyway."""
    from safetensors.torch import save_file

    from fer_robust.engine.inference import load_trained_model

    weight_file = tmp_path / "moved_away.pth.tar"
    weight_file.write_bytes(b"weights")
    cfg = load_config(CONFIGS / "rafdb.yaml", [
        f"model.pretrained_file={weight_file}", "model.backbone=test_resnet",
        "data.img_size=32", "model.mim.patch_size=8"])
    weight_file.unlink()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(cfg, run_dir / "config.yaml")
    classes = [f"class{i}" for i in range(7)]
    (run_dir / "classes.json").write_text(json.dumps(classes))
    trained = build_model(dataclasses.replace(cfg.model, pretrained_file="none"), 7, 32)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()},
              str(run_dir / "best_model.safetensors"))

    _, model, names, _ = load_trained_model(run_dir)
    assert names == classes
    assert model.backbone.pretrained_source == "none (trained from scratch)"
    torch.testing.assert_close(model.state_dict()["backbone.model.conv1.0.weight"],
                               trained.state_dict()["backbone.model.conv1.0.weight"])


def test_a_runs_network_file_initialises_another_runs_backbone(tmp_path):
    """``model.pretrained_file=<run>/best_model.safetensors``: the project's own ``backbone.model.``
    prefix is stripped and the rest of the network (heads for its own class count, ARM, MIM
    decoder) is dropped, so a 7-class run initialises an 8-class one."""
    from safetensors.torch import save_file

    trained = build_model(ModelConfig(backbone="test_resnet"), 7, 32)
    path = tmp_path / "best_model.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    model = build_model(ModelConfig(backbone="test_resnet", pretrained_file=str(path)), 8, 32)
    report = model.backbone.load_report
    backbone_keys = [k for k in trained.state_dict() if k.startswith("backbone.model.")]
    assert not report.missing and len(report.loaded) == len(backbone_keys)
    assert report.stripped_prefix == "backbone.model." and "fer_robust network" in report.layout
    assert any(k.startswith("global_branch.head") for k in report.dropped_classifier)
    for key in backbone_keys:
        torch.testing.assert_close(model.state_dict()[key], trained.state_dict()[key])


def test_truncated_weight_file_is_one_line_naming_it(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "cut.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(path))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(PretrainedFileError, match=r"cannot read pretrained weight file .*cut"):
        build_model(ModelConfig(backbone="test_resnet", pretrained_file=str(path)), 7, 32)
