"""Training on the annotators' vote distributions: what ten taggers say of each image, in place of
one label (FERPlus only).

    L_votes(x) = - sum_c v_c log softmax(z(x))_c,        v = votes(x) / sum_c votes(x)_c

The FERPlus paper (Barsoum et al., ICMI 2016) trained its VGG13 under four target schemes; the
vote distribution trained with cross-entropy was among the best and majority-vote training the
weakest. Here it is the reference of the noise benchmark's data size: retrieval relabelling tries to
recover, from one tagger's label per image, what the ten taggers' votes say, so the baseline
trained on the votes themselves marks how far that recovery could go (see
:mod:`fer_robust.noise_benchmark.comparison`).

What we followed: soft cross-entropy on the normalised vote distribution over the emotion classes,
averaged over the batch, on the baseline network (backbone, average pooling, linear).

What we chose:

- The targets are the raw vote counts the dataset reads (``dataset.votes``: the emotions' columns,
  unknown and not-a-face left out, single votes kept), normalised per image: the distribution
  the benchmark's soft-label figures measure their distance to, so this row's targets are at
  distance 0 from it. The FER+ code's cross-entropy scheme also drops single votes as outliers and
  keeps the top emotions covering 75% of the votes (at most 3); that is not done here.
- The term is ``votes_ce`` in warm-up stages (every image on its votes); the given labels, the
  majority's or one tagger's, are not read by training, only by the reports (fit, memorised share).
- ``data.name`` must name a dataset with votes (``ferplus``, ``ferplus7``): anything else is a
  config error when the config is loaded.
"""
from __future__ import annotations

import numpy as np
import torch

from fer_robust.config import Config, ConfigError
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.losses.classification import soft_cross_entropy
from fer_robust.methods.base import Method, register_method

__all__ = ["VotesMethod", "vote_distributions"]


def vote_distributions(votes: np.ndarray) -> np.ndarray:
    """``(N, C)`` float32: each image's vote counts divided by their sum.

    Raises:
        ConfigError: an image with no vote (or a negative count), named by its index.
    """
    votes = np.asarray(votes, dtype=np.float64)
    totals = votes.sum(axis=1)
    bad = np.flatnonzero((totals <= 0) | (votes < 0).any(axis=1))
    if bad.size:
        raise ConfigError(f"method.name=votes: training image {int(bad[0])} has no usable vote "
                          f"({votes[bad[0]].tolist()}); {bad.size} such image(s)")
    return (votes / totals[:, None]).astype(np.float32)


@register_method("votes")
class VotesMethod(Method):
    """The baseline trained on each image's vote distribution (see the module docstring)."""
    loss_terms = ("votes_ce",)
    archs = ("baseline",)
    stage_kinds = ("warmup",)

    def __init__(self, cfg: Config, num_samples: int, num_classes: int) -> None:
        super().__init__(cfg, num_samples, num_classes)
        # (N, C) vote distribution of every training image, by dataset index; set by
        # bind_training_set.
        self.targets: torch.Tensor | None = None

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        spec = DATASET_SPECS.get(cfg.data.name)
        if spec is None or not spec.has_votes:
            with_votes = [name for name, s in DATASET_SPECS.items() if s.has_votes]
            raise ConfigError(f"'method.name': votes trains on each image's annotator votes, and "
                              f"data.name={cfg.data.name!r} has none; datasets with votes: "
                              f"{with_votes}")

    def bind_training_set(self, dataset) -> None:
        votes = getattr(dataset, "votes", None)
        if votes is None:
            raise ConfigError(f"method.name=votes: the training split of {self.cfg.data.name!r} "
                              "carries no annotator votes")
        if votes.shape != (self.num_samples, self.num_classes):
            raise ConfigError(f"method.name=votes: the votes have shape {tuple(votes.shape)}, the "
                              f"training split ({self.num_samples}, {self.num_classes})")
        self.targets = torch.from_numpy(vote_distributions(votes))

    def own_loss_terms(self, out: dict, labels: torch.Tensor, stage,
                       index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not stage.weight("votes_ce"):
            return {}
        if self.targets is None or index is None:
            raise RuntimeError("VotesMethod needs bind_training_set() and the batch's indices")
        targets = self.targets[index.cpu()].to(out["logits"].device)   # (B, C)
        return {"votes_ce": soft_cross_entropy(out["logits"], targets, reduction="mean")}
