"""The robust stages' flip consistency (robust.flip_consistency, fer_robust.engine.flip_consistency)."""
import subprocess
import sys

import pytest
import torch

from _demo_runs import DEMO, FAST, ROOT, read_metrics
from fer_robust.config import ConfigError, FlipConsistencyConfig, ModelConfig
from fer_robust.engine.flip_consistency import FlipConsistency, map_flip_consistency
from fer_robust.models.network import TwoBranchFER
from fer_robust.validation import load_config


def test_the_distance_is_zero_for_mirrored_maps_and_ignores_each_cells_scale():
    torch.manual_seed(0)
    feat = torch.randn(4, 16, 3, 3)
    mirror = torch.flip(feat, dims=[-1]) * torch.rand(4, 1, 3, 3).add(0.5)   # scaled per cell
    assert map_flip_consistency(feat, mirror).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(4, 16, 3, 3)
    assert map_flip_consistency(feat, other).item() > 0.5
    # Only the valid pairs count; none valid is a zero that still has a graph.
    mixed = torch.cat([mirror[:2], other[2:]])
    valid = torch.tensor([True, True, False, False])
    assert map_flip_consistency(feat, mixed, valid).item() == pytest.approx(0.0, abs=1e-6)
    none = map_flip_consistency(feat.requires_grad_(), other, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_the_views_share_the_erased_box_and_split_keeps_the_images_outputs():
    torch.manual_seed(0)
    fc = FlipConsistency(FlipConsistencyConfig(weight=1.0, erasing_prob=1.0))
    images = torch.randn(3, 3, 16, 16)
    views = fc.views(images)
    assert views.shape == (6, 3, 16, 16)
    assert torch.equal(views[3:], torch.flip(views[:3], dims=[3]))
    assert (views[:3] == 0).any() and not torch.equal(views[:3], images)     # erased
    out = {"logits": torch.arange(6.0)[:, None].repeat(1, 2), "mim_loss": torch.tensor(0.5),
           "mim_index": torch.tensor([1, 4]), "feature_map": torch.randn(6, 4, 2, 2)}
    images_out, term = fc.split(out, 3)
    assert images_out["logits"][:, 0].tolist() == [0.0, 1.0, 2.0]
    assert images_out["mim_index"].tolist() == [1]
    assert images_out["mim_loss"].item() == 0.5 and "feature_map" not in images_out
    # Pairs 1 (its image masked) and 1 (its mirror, row 4, masked) are left out: only 0 and 2.
    expected = map_flip_consistency(out["feature_map"][:3], out["feature_map"][3:],
                                    torch.tensor([True, False, True]))
    assert term.item() == pytest.approx(expected.item())


def test_training_on_the_term_makes_the_backbone_map_mirror_the_face():
    torch.manual_seed(0)
    model = TwoBranchFER(ModelConfig(backbone="resnet10t"), num_classes=3, img_size=32)
    fc = FlipConsistency(FlipConsistencyConfig(weight=1.0, erasing_prob=0.0))
    images = torch.randn(8, 3, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def distance():
        out, term = fc.split(model(fc.views(images), features=True), 8)
        return term

    model.train()
    before = distance().item()
    for _ in range(15):
        opt.zero_grad()
        loss = distance()
        loss.backward()
        opt.step()
    assert distance().item() < 0.5 * before


def test_a_network_without_a_backbone_map_is_refused_in_robust_stages():
    with pytest.raises(ConfigError, match="robust.flip_consistency.weight"):
        load_config(DEMO, ["model.arch=baseline", "robust.flip_consistency.weight=1.0"])
    with pytest.raises(ConfigError, match="robust.flip_consistency.erasing_prob"):
        load_config(DEMO, ["robust.flip_consistency.erasing_prob=1.5"])


@pytest.mark.parametrize("gate", [0.0, 0.99], ids=["noisy", "gated"])
def test_the_term_trains_in_robust_epochs_only_and_not_once_the_labels_look_clean(tmp_path, gate):
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "--config", DEMO, *FAST,
           "data.noise.type=symmetric", "data.noise.rate=0.3", "robust.flip_consistency.weight=1.0",
           f"robust.noise_gate.threshold={gate}", "stages.0.epochs=1", "stages.1.epochs=1",
           "stages.2.epochs=1", f"output_dir={run}"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    records = read_metrics(run)
    assert "loss_flip_consistency" not in records[0]                  # warm-up
    for record in records[1:]:
        assert ("loss_flip_consistency" in record) == (gate == 0.0), record["epoch"]
    if gate == 0.0:
        assert 0.0 < records[1]["loss_flip_consistency"] < 2.0
