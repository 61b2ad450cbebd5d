"""Training on FERPlus's vote distributions (``method.name=votes``): its loss on hand-computed
cases, its config checks, and a training through the same tools that reads no label."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _ferplus_fixture import write_ferplus_fixture

from fer_robust.cli import train as train_cli
from fer_robust.config import Config, ConfigError, StageConfig
from fer_robust.engine.stages import WarmupStage
from fer_robust.methods import build_method
from fer_robust.methods.votes import vote_distributions
from fer_robust.validation import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO_BASELINE = ROOT / "configs" / "demo_baseline.yaml"
FERPLUS_BASELINE = ROOT / "configs" / "ferplus_cpu_baseline.yaml"
VOTES = ["method.name=votes", "stages.0.loss_weights={votes_ce: 1.0}"]


def votes_method(num_samples: int, num_classes: int):
    cfg = Config()
    cfg.method.name = "votes"
    return build_method(cfg, num_samples, num_classes)


def bound_method(votes: np.ndarray):
    method = votes_method(*votes.shape)
    method.bind_training_set(SimpleNamespace(votes=votes))
    return method


def test_the_loss_is_soft_cross_entropy_on_each_images_normalised_votes():
    votes = np.array([[7, 3, 0], [0, 10, 0], [2, 2, 6], [0, 0, 4]], np.float32)
    method = bound_method(votes)
    stage = WarmupStage(StageConfig(name="w", kind="warmup", epochs=1,
                                    loss_weights={"votes_ce": 1.0}), 0)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 1.0, 3.0]])
    index = torch.tensor([0, 2, 3])  # the batch's dataset indices pick the rows
    term = method.own_loss_terms({"logits": logits}, torch.zeros(3, dtype=torch.long), stage,
                                 index)["votes_ce"]
    log_p = torch.log_softmax(logits, 1)
    by_hand = -(0.7 * log_p[0, 0] + 0.3 * log_p[0, 1]
                + 0.2 * log_p[1, 0] + 0.2 * log_p[1, 1] + 0.6 * log_p[1, 2]
                + 1.0 * log_p[2, 2]) / 3
    assert term.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # the labels the batch is given are not read
    again = method.own_loss_terms({"logits": logits}, torch.tensor([2, 0, 1]), stage, index)
    assert again["votes_ce"].item() == term.item()
    # a stage that does not weight the term computes none
    other = WarmupStage(StageConfig(name="w", kind="warmup", epochs=1, loss_weights={"ce": 1.0}), 0)
    assert method.own_loss_terms({"logits": logits}, index, other, index) == {}


def test_an_image_without_votes_or_a_dataset_without_them_is_an_error():
    np.testing.assert_allclose(vote_distributions(np.array([[1, 3], [5, 0]])),
                               [[0.25, 0.75], [1.0, 0.0]])
    with pytest.raises(ConfigError, match="training image 1 has no usable vote"):
        vote_distributions(np.array([[1, 3], [0, 0], [0, 0]]))
    method = votes_method(2, 2)
    with pytest.raises(ConfigError, match="carries no annotator votes"):
        method.bind_training_set(SimpleNamespace(votes=None))
    with pytest.raises(ConfigError, match=r"shape \(3, 2\), the training split \(2, 2\)"):
        method.bind_training_set(SimpleNamespace(votes=np.ones((3, 2))))


def test_votes_is_one_config_switch_on_ferplus_and_a_named_error_elsewhere():
    cfg = load_config(FERPLUS_BASELINE, VOTES)
    assert cfg.method.name == "votes" and cfg.model.arch == "baseline"
    assert load_config(FERPLUS_BASELINE, [*VOTES, "data.name=ferplus7"]).method.name == "votes"
    with pytest.raises(ConfigError, match=r"data.name='demo' has none; datasets with votes: "
                                          r"\['ferplus', 'ferplus7'\]"):
        load_config(DEMO_BASELINE, VOTES)
    with pytest.raises(ConfigError, match=r"unknown loss term\(s\) \['ce'\] under "
                                          r"method.name='votes'; valid: votes_ce"):
        load_config(FERPLUS_BASELINE, ["method.name=votes"])
    with pytest.raises(ConfigError, match=r"'model.arch': 'two_branch' does not train under "
                                          r"method.name='votes'"):
        load_config(ROOT / "configs" / "ferplus_cpu.yaml", VOTES)


def test_a_votes_training_reads_no_label_so_clean_and_one_taggers_labels_train_alike(tmp_path):
    """The same run under the majority labels and under one tagger's vote per image: identical
    losses and accuracies, epoch by epoch; its loss is soft cross-entropy, never below the entropy
    of the fixture's (0.7, 0.3) vote distributions."""
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 8, "FER2013Valid": 2})
    common = ["--config", str(FERPLUS_BASELINE), "--cpu", *VOTES, f"data.root={data}",
              "data.num_workers=0", "model.backbone=resnet10t", "optim.batch_size=16",
              "stages.0.epochs=2", "progress_bar=false"]
    records = {}
    for noise in ("none", "annotator"):
        out = tmp_path / noise
        train_cli.main([*common, f"data.noise.type={noise}", f"output_dir={out}"])
        records[noise] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    changed = np.load(tmp_path / "annotator" / "noisy_labels.npz")["changed_mask"]
    assert 0 < changed.mean() < 1  # one tagger's labels differ from the majority's somewhere
    entropy = -(0.7 * np.log(0.7) + 0.3 * np.log(0.3))
    for clean, tagger in zip(records["none"], records["annotator"]):
        assert clean["loss_votes_ce"] == tagger["loss_votes_ce"] >= entropy
        assert clean["val_accuracy"] == tagger["val_accuracy"]
        assert "loss_ce" not in clean
