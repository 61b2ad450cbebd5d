"""Behaviour of the models: shapes, ARM's batch independence at evaluation, the MIM head, gradient
flow from every loss term, offline weight loading and the baseline switch."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download weights

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F

from fer_robust.config import ARMConfig, MIMConfig, ModelConfig
from fer_robust.models import (AmendRepresentationModule, BaselineFER, PretrainedFileError,
                               TwoBranchFER, arm_geometry, build_model, random_masking)
from fer_robust.models.mim import MIMHead, mask_to_pixels

NUM_CLASSES = 7


def _cfg(**kw) -> ModelConfig:
    kw.setdefault("backbone", "test_resnet")
    return ModelConfig(**kw)


def _smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Low-frequency random images (learnable to reconstruct), roughly unit scale."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone,size", [
    ("test_resnet", 48), ("test_resnet", 64), ("test_resnet", 112), ("resnet18", 48),
    ("test_convnext", 64), ("test_vit", 64), ("test_vit", 112),
])
def test_outputs_have_documented_shapes_and_are_finite(backbone, size):
    torch.manual_seed(0)
    model = build_model(_cfg(backbone=backbone), NUM_CLASSES, size)
    x = torch.randn(4, 3, size, size)
    model.train()
    out = model(x, mim=True)
    assert out["logits"].shape == (4, NUM_CLASSES)
    assert out["local_logits"].shape == (4, NUM_CLASSES)
    assert out["embedding"].shape == (4, model.embed_dim)
    assert out["mim_loss"].ndim == 0 and out["mim_loss"].item() > 0
    assert out["mim_index"].numel() == 2  # masked_fraction 0.5 of 4 images
    for value in out.values():
        assert torch.isfinite(value.float()).all()
    model.eval()
    with torch.no_grad():
        out = model(x, mim=True)
    assert "mim_loss" not in out  # no masking at inference
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(4))
    feat = model.forward_features(x)
    assert feat.shape[1:] == (model.backbone.num_features, *model.backbone.feature_size)
    assert model.forward_head(feat).shape == (4, NUM_CLASSES)
    assert model.forward_head(feat, pre_logits=True).shape == (4, model.global_dim)


def test_every_trainable_parameter_gets_a_gradient_from_the_full_loss():
    # ConvNeXt's head norm is unused by the feature map: it must be frozen, or DDP would fail.
    model = build_model(_cfg(backbone="test_convnext"), NUM_CLASSES, 64).train()
    out = model(torch.randn(4, 3, 64, 64), mim=True)
    y = torch.arange(4) % NUM_CLASSES
    loss = (F.cross_entropy(out["logits"], y) + F.cross_entropy(out["local_logits"], y)
            + out["mim_loss"] + out["embedding"].sum())
    loss.backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []
    assert not model.backbone.model.head.norm.weight.requires_grad


# --------------------------------------------------------------------------------------------------
# ARM
# --------------------------------------------------------------------------------------------------
def test_arm_geometry_recovers_released_resnet18_setting():
    g = arm_geometry(512, 7, 7)
    assert (g.shuffle, g.channels, g.plane) == (16, 2, (112, 112))
    assert (g.kernel, g.stride, g.out_size, g.out_dim) == ((32, 32), (8, 8), (11, 11), 121)
    # Small inputs keep a usable output (ResNet-18 at 64 px: 2x2 map).
    assert arm_geometry(512, 2, 2).out_dim == 169


def test_eval_prediction_of_an_image_is_the_same_alone_and_in_a_batch_of_64():
    torch.manual_seed(0)
    model = build_model(_cfg(), NUM_CLASSES, 32).train()
    for _ in range(3):  # move BatchNorm and ARM running statistics away from their init
        model(torch.randn(16, 3, 32, 32), mim=True)
    model.eval()
    batch = torch.randn(64, 3, 32, 32) * 2 + 0.5
    with torch.no_grad():
        alone = model(batch[5:6])
        in_batch = model(batch)
    for key in ("logits", "local_logits", "embedding"):
        torch.testing.assert_close(alone[key][0], in_batch[key][5], atol=1e-5, rtol=0)


def test_arm_train_mode_affinity_is_the_batch_mean_shared_by_all_images():
    torch.manual_seed(0)
    arm = AmendRepresentationModule(96, (2, 2), momentum=0.1).train()
    x = torch.randn(8, 96, 2, 2)
    with torch.no_grad():
        arm.alpha.fill_(0.0)
        without = arm(x)
        arm.alpha.fill_(1.0)
        with_affinity = arm(x)
        shared = with_affinity - without
        # The same map is added to every image ...
        torch.testing.assert_close(shared, shared[:1].expand_as(shared))
        # ... and it comes from the batch: changing other images changes image 0's output.
        x2 = x.clone()
        x2[1:] = torch.randn(7, 96, 2, 2) * 3
        assert (arm(x2)[0] - with_affinity[0]).abs().max() > 1e-3


def test_arm_running_affinity_updates_in_train_mode_and_is_used_in_eval():
    torch.manual_seed(0)
    arm = AmendRepresentationModule(96, (2, 2), momentum=0.25).train()
    assert torch.count_nonzero(arm.running_affinity) == 0
    x = torch.randn(8, 96, 2, 2) + 1.0
    with torch.no_grad():
        arm.alpha.fill_(0.0)
        without = arm(x)
        arm.alpha.fill_(1.0)
        batch_affinity = (arm(x) - without)[0]
    # Two train passes so far, each lerp'ing by 0.25 from 0 towards this batch's mean map.
    expected = batch_affinity.reshape(arm.geometry.out_size) * (1 - 0.75 ** 2)
    torch.testing.assert_close(arm.running_affinity, expected, atol=1e-5, rtol=1e-4)
    assert arm.running_affinity.abs().max() > 1e-3
    arm.eval()
    before = arm.running_affinity.clone()
    with torch.no_grad():
        arm.alpha.fill_(0.0)
        eval_without = arm(x)
        arm.alpha.fill_(2.0)
        eval_with = arm(x)
    torch.testing.assert_close(arm.running_affinity, before)  # eval does not update it
    torch.testing.assert_close(eval_with - eval_without, 2.0 * before.flatten().expand(8, -1))


# --------------------------------------------------------------------------------------------------
# MIM
# --------------------------------------------------------------------------------------------------
def test_random_masking_masks_the_requested_share_of_patches_with_zeros():
    imgs = torch.randn(3, 3, 32, 32) + 5.0  # no natural zeros
    masked, mask = random_masking(imgs, 0.6, 8)
    assert mask.shape == (3, 16)
    assert mask.sum(dim=1).tolist() == [10.0, 10.0, 10.0]  # round(16 * 0.6)
    pix = mask_to_pixels(mask, 8, 32, 32).bool().expand_as(imgs)
    assert (masked[pix] == 0).all()
    torch.testing.assert_close(masked[~pix], imgs[~pix])


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mim_loss_counts_masked_patches_only(norm_pix):
    head = MIMHead(16, (2, 2), 32, 8, decoder_dim=8, norm_pix_loss=norm_pix)
    imgs, pred = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    empty = torch.zeros(2, 16)
    assert head.forward_loss(imgs, pred, empty).item() == 0.0
    mask = torch.zeros(2, 16)
    mask[:, :5] = 1.0
    loss = head.forward_loss(imgs, pred, mask)
    assert loss.item() > 0.1
    changed = imgs.clone()
    unmasked_pixels = (1 - mask_to_pixels(mask, 8, 32, 32)).bool().expand_as(imgs)
    changed[unmasked_pixels] = torch.randn(int(unmasked_pixels.sum())) * 10
    torch.testing.assert_close(head.forward_loss(changed, pred, mask), loss)


def test_mim_loss_drops_clearly_after_a_few_optimiser_steps_on_one_batch():
    torch.manual_seed(0)
    model = build_model(_cfg(mim=MIMConfig(patch_size=8, masked_fraction=1.0)), NUM_CLASSES,
                        32).train()
    imgs = _smooth_images(4, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        torch.manual_seed(1)  # same masks every step: the batch can be fitted
        loss = model(imgs, mim=True)["mim_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


# --------------------------------------------------------------------------------------------------
# Gradient flow
# --------------------------------------------------------------------------------------------------
def test_gradients_reach_the_backbone_from_each_loss_term_alone():
    torch.manual_seed(0)
    model = build_model(_cfg(), NUM_CLASSES, 32).train()
    out = model(torch.randn(6, 3, 32, 32), mim=True)
    y = torch.arange(6) % NUM_CLASSES
    terms = {
        "ce": F.cross_entropy(out["logits"], y),
        "local_ce": F.cross_entropy(out["local_logits"], y),
        "mim": out["mim_loss"],
        # a contrastive-style term: similarity of the first two embeddings
        "embedding": (out["embedding"][0] * out["embedding"][1]).sum(),
    }
    stem = model.backbone.model.conv1[0].weight  # test_resnet's first convolution
    for name, loss in terms.items():
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        assert stem.grad is not None and stem.grad.abs().sum() > 0, f"no gradient from {name}"


def test_mim_with_nothing_masked_gives_exactly_zero_loss():
    model = build_model(_cfg(mim=MIMConfig(mask_ratio=0.0)), NUM_CLASSES, 32).train()
    out = model(torch.randn(4, 3, 32, 32), mim=True)
    assert out["mim_loss"].item() == 0.0
    out["mim_loss"].backward()  # still part of the graph: the trainer can sum it unconditionally


# --------------------------------------------------------------------------------------------------
# Weight files
# --------------------------------------------------------------------------------------------------
def _celeb_style_checkpoint(tmp_path, suffix=".pth"):
    """A ResNet checkpoint as MS-Celeb-1M training scripts save it: nested, 'module.' keys, an
    identity classifier and extra entries."""
    torch.manual_seed(123)
    source = timm.create_model("test_resnet", num_classes=1000)
    state = {f"module.{k}": v.clone() for k, v in source.state_dict().items()}
    state["module.extra_embedding.weight"] = torch.randn(4, 4)
    path = tmp_path / f"msceleb_test_resnet{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 40, "best_acc": 0.9}, path)
    return path, source.state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weight_file_with_module_prefix_and_fc_keys_loads_its_values(tmp_path, suffix):
    path, source = _celeb_style_checkpoint(tmp_path, suffix)
    model = build_model(_cfg(pretrained_file=str(path)), NUM_CLASSES, 32)
    report = model.backbone.load_report
    assert report.stripped_prefix == "module."
    assert sorted(report.dropped_classifier) == ["fc.bias", "fc.weight"]
    assert report.unexpected == ["extra_embedding.weight"]
    assert report.missing == []
    loaded = model.backbone.model.state_dict()
    for key in ("conv1.0.weight", "layer4.0.conv2.weight", "bn1.running_mean"):
        torch.testing.assert_close(loaded[key], source[key])


def test_weight_file_for_another_architecture_fails_naming_the_file(tmp_path):
    other = tmp_path / "convnext_weights.pth"
    torch.save(timm.create_model("test_convnext").state_dict(), other)
    with pytest.raises(PretrainedFileError, match="convnext_weights.pth.*does not match"):
        build_model(_cfg(pretrained_file=str(other)), NUM_CLASSES, 32)


def test_weight_file_with_wrong_shapes_fails_naming_the_file_and_tensor(tmp_path):
    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    state["conv1.0.weight"] = torch.randn(5, 3, 3, 3)
    path = tmp_path / "wrong_width.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedFileError, match=r"wrong_width.pth.*wrong shape.*conv1.0.weight"):
        build_model(_cfg(pretrained_file=str(path)), NUM_CLASSES, 32)


def test_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedFileError, match="not_there.pth"):
        build_model(_cfg(pretrained_file=str(tmp_path / "not_there.pth")), NUM_CLASSES, 32)


# --------------------------------------------------------------------------------------------------
# Switches
# --------------------------------------------------------------------------------------------------
def test_baseline_is_one_config_switch_away():
    cfg = dataclasses.replace(_cfg(), arch="baseline")
    model = build_model(cfg, NUM_CLASSES, 48).train()
    assert isinstance(model, BaselineFER) and model.num_classes == NUM_CLASSES
    out = model(torch.randn(4, 3, 48, 48), mim=True)
    assert set(out) == {"logits", "embedding"}
    assert model.embed_dim == model.backbone.num_features == 96  # test_resnet's channels
    assert out["embedding"].shape == (4, 96)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(4))


def test_avg_pooling_and_disabled_mim_and_no_local_head_switches():
    cfg = _cfg(pooling="avg", local_head=False, mim=MIMConfig(enabled=False),
               arm=ARMConfig(momentum=0.2))
    model = build_model(cfg, NUM_CLASSES, 48).train()
    assert isinstance(model, TwoBranchFER) and model.mim_head is None
    assert model.global_dim == model.backbone.num_features
    out = model(torch.randn(4, 3, 48, 48), mim=True)
    assert set(out) == {"logits", "embedding"}
    assert out["embedding"].shape == (4, cfg.local_dim + model.backbone.num_features)


def test_without_the_local_branch_the_embedding_is_the_global_representation_alone():
    cfg = _cfg(local_branch=False)  # MIM stays enabled in the config: it needs the local branch
    model = build_model(cfg, NUM_CLASSES, 48).train()
    assert model.local_branch is None and model.mim_head is None
    assert model.embed_dim == model.global_dim and model.local_dim == 0
    x = torch.randn(4, 3, 48, 48)
    out = model(x, mim=True)
    assert set(out) == {"logits", "embedding"}
    assert out["embedding"].shape == (4, model.global_dim)
    torch.testing.assert_close(out["embedding"], F.normalize(model.forward_head(
        model.forward_features(x), pre_logits=True), dim=1), rtol=1e-4, atol=1e-5)


def test_mirrored_per_sample_pass_averages_the_logits_of_image_and_mirror():
    """``robust.pass_hflip``: loss, prediction and probabilities of the per-sample pass come from
    the mean of the image's and its mirror's logits; the embedding stays the image's."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    from fer_robust.engine.evaluation import per_sample_pass

    torch.manual_seed(0)
    model = build_model(_cfg(), NUM_CLASSES, 32).eval()
    images = _smooth_images(6, 32)
    labels = torch.arange(6) % NUM_CLASSES
    loader = DataLoader(TensorDataset(images, labels, torch.arange(6)), batch_size=4)
    accelerator = Accelerator(cpu=True)
    plain = per_sample_pass(model, loader, accelerator, progress=False)
    mirrored = per_sample_pass(model, loader, accelerator, progress=False, hflip=True)
    with torch.no_grad():
        logits = 0.5 * (model(images)["logits"] + model(images.flip(3))["logits"])
    torch.testing.assert_close(torch.from_numpy(mirrored.prob), logits.softmax(1))
    torch.testing.assert_close(torch.from_numpy(mirrored.loss),
                               F.cross_entropy(logits, labels, reduction="none"))
    assert not torch.allclose(torch.from_numpy(plain.prob), torch.from_numpy(mirrored.prob))
    torch.testing.assert_close(torch.from_numpy(mirrored.embedding), torch.from_numpy(plain.embedding))
