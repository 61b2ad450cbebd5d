"""The peers (SCN, EAC, GCE): their losses and decisions on hand-computed cases, their networks,
their config switches, and their trainings through the same tools (resume included)."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _demo_runs import assert_same_epochs, read_metrics

from fer_robust.cli import relabel as relabel_cli
from fer_robust.cli import test as test_cli
from fer_robust.cli import train as train_cli
from fer_robust.config import ConfigError
from fer_robust.methods import build_method, list_methods
from fer_robust.methods.eac import flip_consistency_loss, random_erase
from fer_robust.losses.classification import generalized_cross_entropy
from fer_robust.methods.scn import (high_importance_mask, rank_regularization, relabel_decision)
from fer_robust.models.factory import build_model
from fer_robust.validation import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO_BASELINE = str(ROOT / "configs" / "demo_baseline.yaml")
# The switch of each peer onto the demo's baseline recipe (ResNet-10, 48 px), as the benchmark
# derives it (fer_robust.noise_benchmark.recipe.PEERS).
PEER_SWITCH = {
    "scn": ["model.arch=scn", "method.name=scn", "stages.0.loss_weights={ce: 1.0, rank_reg: 1.0}"],
    "eac": ["method.name=eac", "stages.0.loss_weights={ce: 1.0, cam_consistency: 5.0}"],
    "gce": ["method.name=gce", "stages.0.loss_weights={gce: 1.0}"],
}
TINY = ["data.demo_train_per_class=16", "data.demo_val_per_class=4", "data.demo_test_per_class=4",
        "optim.batch_size=32", "optim.eval_batch_size=64", "progress_bar=false"]


# --------------------------------------------------------------------------------------------------
# GCE
# --------------------------------------------------------------------------------------------------
def test_gce_is_cross_entropy_as_q_goes_to_zero_and_one_minus_p_at_q_one():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5) * 3, torch.tensor([0, 1, 2, 3, 4, 0])
    ce = F.cross_entropy(logits, labels, reduction="none")
    p_y = logits.softmax(1)[torch.arange(6), labels]
    assert torch.allclose(generalized_cross_entropy(logits, labels, 1e-6), ce, rtol=1e-4)
    assert torch.equal(generalized_cross_entropy(logits, labels, 0.0), ce)
    assert torch.allclose(generalized_cross_entropy(logits, labels, 1.0), 1 - p_y, atol=1e-6)
    assert torch.allclose(generalized_cross_entropy(logits, labels, 0.7),
                          (1 - p_y ** 0.7) / 0.7, atol=1e-6)
    # bounded by 1/q where CE is not: a confidently contradicted label
    wrong = torch.tensor([[30.0, -30.0]])
    assert generalized_cross_entropy(wrong, torch.tensor([1]), 0.7).item() == \
        pytest.approx(1 / 0.7)
    assert generalized_cross_entropy(logits, labels, 0.7, reduction="mean").shape == ()


# --------------------------------------------------------------------------------------------------
# EAC
# --------------------------------------------------------------------------------------------------
def test_eac_consistency_is_zero_for_a_flip_symmetric_map_and_positive_otherwise():
    torch.manual_seed(0)
    half = torch.randn(2, 3, 4, 2)
    symmetric = torch.cat([half, torch.flip(half, dims=[-1])], dim=-1)        # (2, 3, 4, 4)
    # A symmetric map whose flipped view gives the same map: consistent.
    assert flip_consistency_loss(symmetric, symmetric).item() == 0.0
    # Flip-equivariant maps (the flipped image's map is the flipped map): consistent.
    cam = torch.randn(2, 3, 4, 4)
    assert flip_consistency_loss(cam, torch.flip(cam, dims=[-1])).item() == pytest.approx(0.0)
    # A map that does not follow the flip: the mean squared difference after flipping back.
    other = torch.randn(2, 3, 4, 4)
    expected = ((cam - torch.flip(other, dims=[-1])) ** 2).mean()
    assert flip_consistency_loss(cam, other).item() == pytest.approx(expected.item())
    assert flip_consistency_loss(cam, other).item() > 0


def test_baseline_class_activation_maps_average_to_the_logits_and_train_only_the_features():
    cfg = load_config(DEMO_BASELINE).model
    torch.manual_seed(0)
    model = build_model(cfg, 7, 48).eval()
    x = torch.randn(3, 3, 48, 48)
    out = model(x, cam=True)
    assert out["cam"].shape == (3, 7, 2, 2)                           # ResNet-10 at 48 px
    assert torch.allclose(out["cam"].mean((2, 3)) + model.head.bias, out["logits"], atol=1e-5)
    model.train()
    flipped = model(torch.flip(x, dims=[3]), cam=True)["cam"]
    flip_consistency_loss(model(x, cam=True)["cam"], flipped).backward()
    assert model.head.weight.grad is None                            # detached, as the authors'
    assert model.backbone.model.conv1[0].weight.grad.abs().sum() > 0


def test_eac_random_erasing_blanks_one_box_per_erased_image():
    torch.manual_seed(0)
    images = torch.ones(50, 3, 20, 20)
    assert torch.equal(random_erase(images, 0.0, (0.02, 0.25), (0.3, 3.3)), images)
    erased = random_erase(images, 1.0, (0.02, 0.25), (0.3, 3.3))
    assert torch.equal(images, torch.ones(50, 3, 20, 20))              # the input is not changed
    zero = erased[:, 0] == 0                                           # (50, 20, 20)
    assert torch.equal(zero, (erased == 0).all(1))                     # every channel alike
    share = zero.float().mean((1, 2))
    assert (share > 0).all() and (share <= 0.25 + 0.05).all()         # one box of 2-25% (rounded)
    for img in zero:                                                   # a box: rows x columns
        rows, cols = img.any(1), img.any(0)
        assert img.sum() == rows.sum() * cols.sum()
    half = random_erase(images, 0.5, (0.02, 0.25), (0.3, 3.3))
    assert 10 < int((half == 0).flatten(1).any(1).sum()) < 40


def test_eac_step_outputs_the_maps_of_the_image_and_of_its_flip():
    cfg = load_config(DEMO_BASELINE, [*PEER_SWITCH["eac"], "method.eac.erasing_prob=0"])
    method = build_method(cfg, 10, 7)
    torch.manual_seed(0)
    model = build_model(cfg.model, 7, 48).eval()                       # eval: BatchNorm per image
    x = torch.randn(4, 3, 48, 48)
    out = method.forward(model, x, mim=False)
    assert torch.allclose(out["logits"], model(x)["logits"], atol=1e-5)
    assert torch.allclose(out["cam_flipped"], model(torch.flip(x, dims=[3]), cam=True)["cam"],
                          atol=1e-5)
    cfg.method.eac.joint_forward = False
    two = build_method(cfg, 10, 7).forward(model, x, mim=False)
    assert torch.allclose(two["cam_flipped"], out["cam_flipped"], atol=1e-5)


# --------------------------------------------------------------------------------------------------
# SCN
# --------------------------------------------------------------------------------------------------
def test_scn_rank_regularisation_is_zero_when_the_margin_is_met_and_margin_minus_gap_otherwise():
    # 10 images, beta 0.7: the 7 most important form the high group, the other 3 the low group.
    wide = torch.tensor([0.9, 0.85, 0.8, 0.9, 0.8, 0.85, 0.9, 0.5, 0.55, 0.6])
    assert high_importance_mask(wide, 0.7).tolist() == [True] * 7 + [False] * 3
    assert wide[:7].mean() - wide[7:].mean() > 0.15                   # the margin is met
    assert rank_regularization(wide, 0.7, 0.15).item() == 0.0
    narrow = torch.tensor([0.6, 0.62, 0.61, 0.6, 0.6, 0.63, 0.6, 0.55, 0.58, 0.57],
                          requires_grad=True)
    gap = narrow.detach()[:7].mean() - narrow.detach()[7:].mean()      # 0.0443
    rr = rank_regularization(narrow, 0.7, 0.15)
    assert rr.item() == pytest.approx(0.15 - gap.item(), abs=1e-6)
    rr.backward()   # pushes the high group up and the low group down
    assert (narrow.grad[:7] < 0).all() and (narrow.grad[7:] > 0).all()
    assert rank_regularization(torch.tensor([0.3], requires_grad=True), 0.7, 0.15).item() == 0.0


def test_scn_relabels_where_the_top_prediction_beats_the_label_by_the_margin():
    prob = torch.tensor([[0.70, 0.20, 0.10],    # label 1: 0.70 - 0.20 = 0.50 > 0.2 -> 0
                         [0.45, 0.30, 0.25],    # label 1: 0.15, not above the margin
                         [0.10, 0.20, 0.70],    # label 2: its own top: never relabelled
                         [0.05, 0.60, 0.35],    # label 0: 0.55 -> 1
                         [0.40, 0.21, 0.39]])   # label 1: 0.19, just short
    labels = torch.tensor([1, 1, 2, 0, 1])
    relabel, new = relabel_decision(prob, labels, 0.2)
    assert relabel.tolist() == [True, False, False, True, False]
    assert new[relabel].tolist() == [0, 1]
    low = torch.tensor([False, True, True, True, True])                # sample 0 is important
    relabel, _ = relabel_decision(prob, labels, 0.2, low)
    assert relabel.tolist() == [False, False, False, True, False]


def test_scn_step_relabels_only_the_low_importance_group_from_its_epoch_on():
    cfg = load_config(DEMO_BASELINE, PEER_SWITCH["scn"])   # beta 0.7, delta2 0.2, from epoch 9
    n = 10
    method = build_method(cfg, n, 3)
    state = SimpleNamespace(train_labels=np.zeros(n, np.int64))
    # Every sample's top prediction is class 2 by a wide margin over its label 0.
    out = {"logits": torch.tensor([[0.0, 0.0, 5.0]]).repeat(n, 1),
           "importance": torch.linspace(0.9, 0.1, n)}                 # 7 high, 3 low (7, 8, 9)
    labels, index = torch.zeros(n, dtype=torch.long), torch.arange(n)
    method.after_step(out, labels, index, 8, state, gather=lambda x: x)
    assert state.train_labels.tolist() == [0] * n                     # before epoch 9: none
    np.testing.assert_allclose(method.importance, out["importance"].numpy())
    method.after_step(out, labels, index, 9, state, gather=lambda x: x)
    assert state.train_labels.tolist() == [0] * 7 + [2] * 3
    cfg.method.scn.relabel_group = "all"                              # the released code's rule
    state.train_labels[:] = 0
    build_method(cfg, n, 3).after_step(out, labels, index, 9, state, gather=lambda x: x)
    assert state.train_labels.tolist() == [2] * n


def test_scn_network_weights_its_logits_by_the_importance():
    cfg = load_config(DEMO_BASELINE, PEER_SWITCH["scn"]).model
    torch.manual_seed(0)
    model = build_model(cfg, 7, 48).eval()
    x = torch.randn(5, 3, 48, 48)
    out = model(x)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    raw = model.head(pooled)
    assert ((out["importance"] > 0) & (out["importance"] < 1)).all()
    assert torch.allclose(out["logits"], out["importance"][:, None] * raw, atol=1e-6)
    assert torch.equal(out["logits"].argmax(1), raw.argmax(1))      # a positive scale
    assert torch.allclose(model.forward_head(model.forward_features(x)), out["logits"], atol=1e-6)
    assert torch.allclose(model(x[:1])["logits"], out["logits"][:1], atol=1e-5)  # batch-free


# --------------------------------------------------------------------------------------------------
# Config switches
# --------------------------------------------------------------------------------------------------
def test_each_peer_is_one_config_switch_and_wrong_combinations_are_named_errors():
    assert list_methods() == ["staged", "scn", "eac", "gce", "votes"]
    for peer, switch in PEER_SWITCH.items():
        assert load_config(DEMO_BASELINE, switch).method.name == peer
    with pytest.raises(ConfigError, match=r"'method.name': 'dividemix' is not one of \['staged'"):
        load_config(DEMO_BASELINE, ["method.name=dividemix"])
    with pytest.raises(ConfigError, match="unknown config key 'method.scn.beta'"):
        load_config(DEMO_BASELINE, ["method.scn.beta=0.7"])
    with pytest.raises(ConfigError, match="method.scn.relabel_group"):
        load_config(DEMO_BASELINE, [*PEER_SWITCH["scn"], "method.scn.relabel_group=some"])
    with pytest.raises(ConfigError, match=r"'model.arch': 'baseline' does not train under "
                                          r"method.name='scn'; valid: \['scn'\]"):
        load_config(DEMO_BASELINE, PEER_SWITCH["scn"][1:])
    with pytest.raises(ConfigError, match=r"'model.arch': 'scn' does not train under "
                                          r"method.name='staged'"):
        load_config(DEMO_BASELINE, ["model.arch=scn"])
    with pytest.raises(ConfigError, match=r"unknown loss term\(s\) \['rank_reg'\] under "
                                          r"method.name='eac'; valid: ce, cam_consistency"):
        load_config(DEMO_BASELINE, ["method.name=eac", "stages.0.loss_weights.rank_reg=1"])
    with pytest.raises(ConfigError, match=r"unknown loss term\(s\) \['gce'\] under "
                                          r"method.name='staged'"):
        load_config(DEMO_BASELINE, ["stages.0.loss_weights.gce=1"])
    with pytest.raises(ConfigError, match=r"'stages.0.kind': 'self_paced' does not train under "
                                          r"method.name='gce'"):
        load_config(DEMO_BASELINE, [*PEER_SWITCH["gce"], "stages.0.kind=self_paced"])
    with pytest.raises(ConfigError, match="method.gce.q"):
        load_config(DEMO_BASELINE, [*PEER_SWITCH["gce"], "method.gce.q=1.5"])
    with pytest.raises(ConfigError, match="method.scn.high_ratio"):
        load_config(DEMO_BASELINE, [*PEER_SWITCH["scn"], "method.scn.high_ratio=1.0"])
    with pytest.raises(ConfigError, match="method.eac.erasing_scale"):
        load_config(DEMO_BASELINE, [*PEER_SWITCH["eac"], "method.eac.erasing_scale=[0.3, 0.1]"])


# --------------------------------------------------------------------------------------------------
# Trainings through the tools
# --------------------------------------------------------------------------------------------------
def test_scn_resume_continues_exactly(tmp_path):
    """An SCN run cut after its first relabelling epoch and resumed gives the uninterrupted run's
    metrics, training labels and importance weights (they are saved with the checkpoint)."""
    common = ["--config", DEMO_BASELINE, *TINY, *PEER_SWITCH["scn"], "stages.0.epochs=3",
              "data.img_size=32", "data.demo_train_per_class=8",
              "data.noise.type=symmetric", "data.noise.rate=0.3",
              # relabel from the second epoch, on any top prediction, so that some labels change
              "method.scn.relabel_from_epoch=1", "method.scn.relabel_margin=0.0"]
    train_cli.main([*common, f"output_dir={tmp_path / 'full'}"])
    train_cli.main([*common, f"output_dir={tmp_path / 'cut'}", "--stop-after-epoch", "1"])
    train_cli.main(["--resume", str(tmp_path / "cut")])
    full = read_metrics(tmp_path / "full")
    assert len(full) == 3
    assert full[0]["num_relabeled"] == 0 and full[1]["num_relabeled"] > 0
    assert_same_epochs(read_metrics(tmp_path / "cut"), full)
    for epoch in (1, 2):
        a = np.load(tmp_path / f"full/samples/epoch_{epoch:03d}.npz")
        b = np.load(tmp_path / f"cut/samples/epoch_{epoch:03d}.npz")
        assert np.array_equal(a["train_labels"], b["train_labels"])
        np.testing.assert_allclose(a["importance"], b["importance"], atol=1e-5)
    last = np.load(tmp_path / "full/samples/epoch_002.npz")
    assert (last["train_labels"] != last["given_labels"]).sum() == full[-1]["num_relabeled"]
    # every image the loader drew (it drops the last partial batch) has its importance weight
    assert np.isfinite(last["importance"]).mean() > 0.5
    # tools/test.py evaluates the checkpoint; tools/relabel.py says it is not for a peer's run.
    result = test_cli.main(["--checkpoint", str(tmp_path / "full"), "--split", "test"])
    assert result["num_samples"] == 28 and (tmp_path / "full" / "eval_test.json").is_file()
    with pytest.raises(SystemExit) as exc:
        relabel_cli.main(["--checkpoint", str(tmp_path / "full"), "--out", str(tmp_path / "rel")])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------------
# Each peer against plain cross-entropy under demo label noise (slow: six short trainings)
# --------------------------------------------------------------------------------------------------
# The setting the peers were made for, in miniature: a backbone pretrained on clean faces (the
# papers start from MS-Celeb-1M / VGGFace2 weights; here 6 epochs of cross-entropy on 700 demo faces
# drawn with another seed), then fine-tuned under 40% symmetric noise on 420 other faces at 32 px,
# without augmentation, for 8 epochs: plain cross-entropy fits three quarters of the wrong labels.
# SCN relabels from epoch 2. Measured here (val accuracy, memorised share): CE 0.543, 0.77; GCE
# 0.686, 0.33; SCN 0.507, 0.47; EAC 0.529, 0.36. All three fit far fewer wrong labels; only GCE is
# ahead in accuracy after 8 epochs (cross-entropy's accuracy is still rising while it memorises).
PRETRAIN_DEMO = ["data.img_size=32", "data.demo_train_per_class=100", "data.demo_val_per_class=20",
                 "data.demo_test_per_class=2", "data.split_seed=1", "optim.batch_size=32",
                 "stages.0.epochs=6", "progress_bar=false"]
NOISY_DEMO = ["data.img_size=32", "data.demo_train_per_class=60", "data.demo_val_per_class=20",
              "data.demo_test_per_class=2", "optim.batch_size=32", "progress_bar=false",
              "stages.0.epochs=8", "data.noise.type=symmetric", "data.noise.rate=0.4",
              "data.augment.crop_scale=[1.0, 1.0]", "data.augment.rotation=0",
              "data.augment.color_jitter=0", "data.augment.hflip=0",
              "method.scn.relabel_from_epoch=2"]


@pytest.fixture(scope="module")
def noisy_demo_runs(tmp_path_factory):
    """``{method: (last metrics record, final_fit.json)}`` of cross-entropy and the three peers,
    each fine-tuned from the same pretrained backbone."""
    from safetensors.torch import load_file
    root = tmp_path_factory.mktemp("noisy_demo")
    train_cli.main(["--config", DEMO_BASELINE, *PRETRAIN_DEMO, f"output_dir={root / 'pretrain'}"])
    weights = load_file(str(root / "pretrain" / "last_model.safetensors"))
    backbone = root / "backbone.pth"
    torch.save({k[len("backbone.model."):]: v for k, v in weights.items()
                if k.startswith("backbone.model.")}, backbone)
    runs = {}
    for method, switch in {"ce": [], **PEER_SWITCH}.items():
        train_cli.main(["--config", DEMO_BASELINE, *NOISY_DEMO, *switch,
                        f"model.pretrained_file={backbone}", f"output_dir={root / method}"])
        runs[method] = (read_metrics(root / method)[-1],
                        json.loads((root / method / "final_fit.json").read_text()))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("peer", list(PEER_SWITCH))
def test_peer_learns_the_noisy_demo_and_fits_far_fewer_wrong_labels_than_cross_entropy(
        noisy_demo_runs, peer):
    (ce, ce_fit), (last, fit) = noisy_demo_runs["ce"], noisy_demo_runs[peer]
    print(f"{peer}: val {last['val_accuracy']:.3f} (CE {ce['val_accuracy']:.3f}), memorised "
          f"{fit['final_memorised_share']:.3f} (CE {ce_fit['final_memorised_share']:.3f})")
    assert ce_fit["final_memorised_share"] > 0.6          # the regime: CE fits the noise
    assert last["val_accuracy"] > 3 / 7                   # learns: three times chance
    assert fit["final_memorised_share"] < ce_fit["final_memorised_share"] - 0.25
    if peer == "gce":
        assert last["val_accuracy"] > ce["val_accuracy"] + 0.05   # and is ahead in accuracy
    else:  # SCN and EAC are not ahead after 8 epochs, and not far behind
        assert last["val_accuracy"] > ce["val_accuracy"] - 0.05
