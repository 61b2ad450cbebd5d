"""The paper-scale path: every shipped config trains and evaluates, mixed precision, protocols.

Each config in ``configs/`` runs as shipped (precision, stages, samplers, optimiser, schedule)
with size-only overrides: a tiny backbone, a small input, small batches, one epoch per stage and a
handful of images in that benchmark's real on-disk layout. A new config is covered by being there.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from _benchmark_fixtures import write_affectnet, write_fer2013, write_rafdb, write_sfew
from _ferplus_fixture import write_ferplus_fixture
from fer_robust.cli import test as test_cli
from fer_robust.cli import train as train_cli
from fer_robust.config import ConfigError
from fer_robust.engine.distributed import build_accelerator
from fer_robust.models.factory import build_model
from fer_robust.validation import load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("_"))
TINY_BACKBONE = "resnet10t"


def write_fixture(name: str, root: Path) -> int:
    """Write a small copy of benchmark ``name`` under ``root``; returns its test-split size."""
    if name == "ferplus":
        write_ferplus_fixture(root, {"FER2013Train": 6, "FER2013Valid": 2, "FER2013Test": 2})
        return 14
    if name == "rafdb":
        write_rafdb(root)
        return 5
    if name in ("affectnet7", "affectnet8"):
        write_affectnet(root, [i % 8 for i in range(64)], [i % 8 for i in range(16)])
        return 16 if name == "affectnet8" else 14
    if name == "sfew":
        write_sfew(root, train_per_class=6, val_per_class=2)
        return 15
    if name == "fer2013":
        write_fer2013(root)
        return 2
    raise ValueError(name)


def size_overrides(config: Path, tmp_path: Path) -> tuple[list[str], int]:
    """Overrides that change sizes only (and where data and weights live), and the test size."""
    cfg = load_config(config, _weights_override(config, tmp_path))
    patch = cfg.model.mim.patch_size
    over = [f"model.backbone={TINY_BACKBONE}", f"data.img_size={max(32, 2 * patch)}",
            "optim.batch_size=8", "optim.eval_batch_size=16", "data.num_workers=0",
            "progress_bar=false", f"output_dir={tmp_path / 'run'}"]
    over += [f"stages.{i}.epochs=1" for i, st in enumerate(cfg.stages) if st.epochs > 0]
    over += _weights_override(config, tmp_path)
    if cfg.data.name == "demo":
        over += ["data.demo_train_per_class=8", "data.demo_val_per_class=3",
                 "data.demo_test_per_class=3"]
        return over, 21
    root = tmp_path / "data"
    n_test = write_fixture(cfg.data.name, root)
    return over + [f"data.root={root}"], n_test


def _weights_override(config: Path, tmp_path: Path) -> list[str]:
    """Configs that expect pretrained weights get a local file for the tiny backbone."""
    if not load_config(config, ["model.pretrained_file=none"]).model.expects_pretrained:
        return []
    weights = tmp_path / "tiny_backbone.pth"
    if not weights.is_file():
        torch.save(timm.create_model(TINY_BACKBONE, num_classes=0).state_dict(), weights)
    return [f"model.pretrained_file={weights}"]


@pytest.mark.parametrize("config", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_trains_and_its_checkpoint_evaluates(config, tmp_path):
    overrides, n_test = size_overrides(config, tmp_path)
    shipped = load_config(config, _weights_override(config, tmp_path))
    train_cli.main(["--config", str(config), *overrides])

    run = tmp_path / "run"
    saved = load_config(run / "config.yaml")
    # Everything but sizes is as shipped.
    assert saved.mixed_precision == shipped.mixed_precision
    assert [(s.kind, s.loss_weights) for s in saved.stages] == \
        [(s.kind, s.loss_weights) for s in shipped.stages]
    assert (saved.optim.opt, saved.optim.sched, saved.optim.lr, saved.data.sampler) == \
        (shipped.optim.opt, shipped.optim.sched, shipped.optim.lr, shipped.data.sampler)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == sum(1 for s in shipped.stages if s.epochs > 0)
    for r, stage in zip(records, [s for s in shipped.stages if s.epochs > 0]):
        assert np.isfinite(r["loss"])
        for term, w in stage.loss_weights.items():
            if w and not (term == "local_ce" and shipped.model.arch == "baseline"):
                assert f"loss_{term}" in r, (term, r)

    result = test_cli.main(["--checkpoint", str(run), "--split", "test"])
    assert result["num_samples"] == n_test
    assert 0.0 <= result["accuracy"] <= 1.0 and result["protocol"] == "validation"


# --------------------------------------------------------------------------------------------------
# Mixed precision
# --------------------------------------------------------------------------------------------------
def _one_step(mixed_precision: str) -> tuple[float, dict[str, torch.Tensor], torch.Tensor, str]:
    """Loss, gradients, ARM running affinity and backbone output dtype after one two-branch training step
    (ce + local_ce + MIM) from a fixed initialisation and batch."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(True)
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["model.mim.masked_fraction=0.5"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 7, 48)
    acc = build_accelerator(mixed_precision, cpu=True)
    model = acc.prepare(model)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 48, 48, generator=gen)
    labels = torch.arange(16) % 7
    torch.manual_seed(2)  # the MIM mask
    model.train()
    seen = {}
    # accelerate returns fp32 outputs; the backbone's own output shows the autocast dtype.
    acc.unwrap_model(model).backbone.register_forward_hook(
        lambda mod, args, out: seen.update(dtype=str(out.dtype)))
    out = model(images, mim=True)
    ce = torch.nn.functional.cross_entropy(out["logits"].float(), labels)
    local = torch.nn.functional.cross_entropy(out["local_logits"].float(), labels)
    loss = ce + 0.5 * local + out["mim_loss"].float()
    acc.backward(loss)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    arm = acc.unwrap_model(model).global_branch.pool.running_affinity.detach().clone()
    return float(loss.detach()), grads, arm, seen["dtype"]


def test_bf16_training_step_is_close_to_fp32():
    loss32, grads32, arm32, dtype32 = _one_step("no")
    loss16, grads16, arm16, dtype16 = _one_step("bf16")
    assert dtype32 == "torch.float32" and dtype16 == "torch.bfloat16"  # autocast really ran
    assert loss16 == pytest.approx(loss32, rel=0.03)
    assert grads16.keys() == grads32.keys()
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    cosine = torch.nn.functional.cosine_similarity(flat32, flat16, dim=0)
    assert cosine > 0.98
    assert arm16.dtype == torch.float32 and torch.allclose(arm16, arm32, atol=0.05)
    assert arm32.abs().sum() > 0  # the running estimate moved


def test_fp16_on_the_cpu_trains_in_fp32_and_says_so(tmp_path):
    with pytest.warns(UserWarning, match="fp16"):
        train_cli.main(["--config", str(ROOT / "configs" / "demo.yaml"), "mixed_precision=fp16",
                        "data.demo_train_per_class=8", "data.demo_val_per_class=3",
                        "optim.batch_size=16", "stages.0.epochs=1", "stages.1.epochs=1",
                        "stages.2.epochs=1", "progress_bar=false", f"output_dir={tmp_path / 'run'}"])
    assert (tmp_path / "run" / "best_model.safetensors").is_file()


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------
def test_val_fraction_zero_under_the_validation_protocol_names_the_paper_protocol():
    with pytest.raises(ConfigError, match="data.protocol=full_train"):
        load_config(ROOT / "configs" / "demo.yaml", ["data.val_fraction=0"])


def test_full_train_protocol_uses_every_training_image_keeps_the_last_epoch_and_says_so(tmp_path):
    root = tmp_path / "data"
    write_rafdb(root)
    run = tmp_path / "run"
    common = ["model.backbone=resnet10t", "data.img_size=32", "optim.batch_size=8",
              "progress_bar=false", "data.name=rafdb", f"data.root={root}"]
    train_cli.main(["--config", str(ROOT / "configs" / "demo.yaml"), *common,
                    "data.protocol=full_train", "data.val_fraction=0", f"output_dir={run}",
                    "stages.0.epochs=2", "stages.1.epochs=0", "stages.2.epochs=0"])
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all("val_accuracy" not in r for r in records)
    assert {r["protocol"] for r in records} == {"full_train"}
    assert all("no validation split" in r["model_selection"] for r in records)
    assert not (run / "best_model.safetensors").exists()
    assert (run / "last_model.safetensors").is_file()

    # The whole training split trained: the per-sample state covers all 48 RAF-DB train images.
    noisy_free = load_config(run / "config.yaml")
    from fer_robust.data.registry import build_dataset
    assert len(build_dataset(noisy_free.data, "train")) == 48
    with pytest.raises(ValueError, match="no validation split"):
        build_dataset(noisy_free.data, "val")

    result = test_cli.main(["--checkpoint", str(run), "--split", "test"])
    saved = json.loads((run / "eval_test.json").read_text())
    assert result["num_samples"] == 5
    assert saved["protocol"] == "full_train"
    assert saved["model_selection"].startswith("none: last epoch kept")
    assert "never used for selection" in saved["model_selection"]


def test_validation_protocol_result_names_the_selected_epoch(tmp_path):
    run = tmp_path / "run"
    train_cli.main(["--config", str(ROOT / "configs" / "demo.yaml"), "data.demo_train_per_class=8",
                    "data.demo_val_per_class=3", "optim.batch_size=16", "stages.0.epochs=1",
                    "stages.1.epochs=0", "stages.2.epochs=0", "progress_bar=false",
                    f"output_dir={run}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = test_cli.main(["--checkpoint", str(run), "--split", "test"])
    assert result["model_selection"] == ("best validation accuracy (epoch 0); the test split was "
                                         "never used for selection")
