"""The classification terms of a training step and how closely the step fits its labels.

:func:`classification_terms` gives ce, local_ce and soft_ce of a batch against the per-sample
targets the stage set (:class:`~fer_robust.engine.sample_state.SampleState`); the trainer adds
the MIM and DCL terms and the method's own
(:meth:`~fer_robust.engine.trainer.Trainer.compute_losses`).
:func:`fit_figures` turns the counts the training loop keeps into the share of images predicted as
their given label and the share of wrong labels memorised.
"""
from __future__ import annotations

import torch

from fer_robust.config import Config
from fer_robust.engine.stages import Stage
from fer_robust.losses.classification import (cross_entropy, generalized_cross_entropy,
                                            soft_generalized_cross_entropy, weighted_mean)

__all__ = ["classified_mask", "classification_terms", "fit_figures"]


def classified_mask(out: dict, batch_size: int, classify_masked: bool) -> torch.Tensor:
    """``(B,)`` bool: the batch's images that count for the classification terms and for DCL's
    memory: all of them, unless ``classify_masked`` is off and MIM masked some (``mim_index``)."""
    keep = torch.ones(batch_size, dtype=torch.bool, device=out["logits"].device)
    if "mim_index" in out and not classify_masked:
        keep[out["mim_index"]] = False
    return keep


def classification_terms(cfg: Config, out: dict, rows: dict[str, torch.Tensor],
                         keep: torch.Tensor, stage: Stage) -> dict[str, torch.Tensor]:
    """ce, local_ce and soft_ce of :meth:`~fer_robust.engine.trainer.Trainer.compute_losses`
    against the targets ``rows``
    (:meth:`~fer_robust.engine.sample_state.SampleState.batch_targets`), counting only the images
    ``keep`` marks."""
    train_labels = rows["labels"]
    ce_w, soft_w = rows["ce_weight"] * keep, rows["soft_weight"] * keep
    ls = cfg.optim.label_smoothing
    per_batch = cfg.robust.loss_normalization == "batch"

    def average(loss, weights):
        return (loss * weights).mean() if per_batch else weighted_mean(loss, weights)

    q_hard = cfg.robust.clean_loss_q if stage.robust else 0.0
    q_soft = cfg.robust.soft_loss_q if stage.robust else 0.0

    def hard(logits):
        if q_hard:
            return average(generalized_cross_entropy(logits, train_labels, q_hard), ce_w)
        return average(cross_entropy(logits, train_labels, label_smoothing=ls), ce_w)

    def soft(logits):
        return average(soft_generalized_cross_entropy(logits, rows["soft_labels"], q_soft),
                       soft_w)

    terms: dict[str, torch.Tensor] = {}
    if stage.weight("ce"):
        terms["ce"] = hard(out["logits"])
    if stage.weight("local_ce") and "local_logits" in out:
        terms["local_ce"] = hard(out["local_logits"])
    if stage.weight("soft_ce"):
        terms["soft_ce"] = soft(out["logits"])
        if "local_logits" in out:
            terms["soft_ce"] = terms["soft_ce"] + soft(out["local_logits"])
    return terms


def fit_figures(counts: torch.Tensor, noise_known: bool, prefix: str = "") -> dict[str, float]:
    """How closely the model fits the labels it is given, from summed counts ``[agree, images,
    changed, changed and predicted as given]``:

    - ``train_accuracy_given``: share of training images predicted as their given label;
    - ``memorised_share`` (when the true labels are known): share of the changed-label images
      predicted as their wrong given label. Plain cross-entropy drives it towards 1 as it memorises
      the noise; a noise-robust method keeps it low.

    Per epoch they are counted on the epoch's augmented training batches as they are trained (like
    a training top-1, at no extra cost); after the last epoch
    :meth:`~fer_robust.engine.trainer.Trainer.final_fit_figures`
    measures them once in eval mode on un-augmented images (``final_`` prefix).
    """
    c = counts.double().cpu().tolist()
    out = {f"{prefix}train_accuracy_given": c[0] / max(c[1], 1.0)}
    if noise_known:
        out[f"{prefix}memorised_share"] = c[3] / max(c[2], 1.0)
    return out
