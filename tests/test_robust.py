"""Behaviour of the robust-learning algorithms: GMM split, retrieval relabelling, DCL, metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_robust.config import DCLConfig, RelabelConfig, SplitConfig
from fer_robust.losses.classification import (cross_entropy, generalized_cross_entropy,
                                            soft_cross_entropy, soft_generalized_cross_entropy,
                                            weighted_mean)
from fer_robust.losses.dcl import DistributionContrastiveLoss
from fer_robust.robust.gmm_split import (LossHistory, class_dependent_split,
                                        class_relative_losses)
from fer_robust.robust.metrics import (noise_detection_metrics, per_class_clean_ratio,
                                       relabel_accuracy, total_variation_distance)
from fer_robust.robust.retrieval import (knn_search, per_class_average_precision,
                                         retrieval_soft_labels, sharpen)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def planted_losses(num_classes: int = 5, per_class: int = 400, noise_rate: float = 0.2, seed: int = 0):
    """Per-class bimodal losses whose scale differs 10x between classes (as easy vs hard classes)."""
    rng = np.random.default_rng(seed)
    losses, labels, noisy = [], [], []
    for c in range(num_classes):
        scale = 0.3 * (1 + 2 * c)  # class 0's noisy losses sit below class 4's clean ones
        is_noisy = rng.random(per_class) < noise_rate
        clean_part = np.abs(rng.normal(0.15 * scale, 0.05 * scale, per_class))
        noisy_part = rng.normal(1.0 * scale, 0.15 * scale, per_class)
        losses.append(np.where(is_noisy, noisy_part, clean_part))
        labels.append(np.full(per_class, c))
        noisy.append(is_noisy)
    return np.concatenate(losses), np.concatenate(labels), np.concatenate(noisy)


def clustered_embeddings(num_classes: int, per_class: int, dim: int, subclusters: int = 1,
                         spread: float = 0.3, seed: int = 0):
    """Unit-norm embeddings around class centres (each with ``subclusters`` sub-centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, subclusters, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    sub = rng.integers(0, subclusters, labels.size)
    x = centres[labels, sub] + spread * rng.normal(size=(labels.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


# --------------------------------------------------------------------------------------------------
# GMM split
# --------------------------------------------------------------------------------------------------
def test_class_dependent_split_finds_planted_noisy_samples():
    losses, labels, noisy = planted_losses()
    result = class_dependent_split(losses, labels, 5, SplitConfig())
    metrics = noise_detection_metrics(result.clean_prob, noisy, threshold=0.5)
    assert metrics["f1"] > 0.9 and metrics["auc"] > 0.97
    assert result.clean_prob.dtype == np.float32 and result.clean_mask.dtype == bool
    assert all(info.fallback == "none" for info in result.class_info)
    for info in result.class_info:
        assert info.means[0] < info.means[1]
        assert abs(info.clean_ratio - 0.8) < 0.06


def test_class_dependent_split_beats_a_single_global_threshold_across_loss_scales():
    losses, labels, noisy = planted_losses()
    per_class = noise_detection_metrics(class_dependent_split(losses, labels, 5, SplitConfig()).clean_prob, noisy)
    global_only = class_dependent_split(losses, np.zeros_like(labels), 1, SplitConfig())
    assert per_class["f1"] > noise_detection_metrics(global_only.clean_prob, noisy)["f1"] + 0.1


@pytest.mark.parametrize("fallback", ["global", "clean"])
def test_split_handles_empty_tiny_and_constant_classes(fallback):
    losses, labels, _ = planted_losses(num_classes=2, per_class=200)
    rng = np.random.default_rng(1)
    # class 2: empty; class 3: one sample; class 4: three samples; class 5: 50 identical losses.
    losses = np.concatenate([losses, [0.5], rng.random(3), np.full(50, 0.7)])
    labels = np.concatenate([labels, [3], [4, 4, 4], np.full(50, 5)])
    cfg = SplitConfig(min_class_size=20, fallback=fallback)
    result = class_dependent_split(losses, labels, 6, cfg)
    assert result.clean_prob.shape == losses.shape and np.isfinite(result.clean_prob).all()
    info = {i.class_index: i for i in result.class_info}
    assert info[2].n == 0 and info[2].fallback == "empty"
    assert [info[c].fallback for c in (3, 4, 5)] == [fallback] * 3
    if fallback == "clean":
        assert result.clean_mask[labels >= 3].all()


def test_split_is_reproducible_with_a_seed():
    losses, labels, _ = planted_losses(seed=3)
    first = class_dependent_split(losses, labels, 5, SplitConfig(seed=7))
    second = class_dependent_split(losses, labels, 5, SplitConfig(seed=7))
    np.testing.assert_array_equal(first.clean_prob, second.clean_prob)


def test_monotone_split_never_calls_a_higher_loss_cleaner():
    rng = np.random.default_rng(0)
    # The clean component is the wide one here, so the raw posterior turns back up far right.
    losses = np.concatenate([rng.normal(0.3, 0.2, 800), rng.normal(1.0, 0.02, 200), [3.0]])
    labels = np.zeros(losses.size, np.int64)
    cfg = SplitConfig(normalize="none")
    prob = class_dependent_split(losses, labels, 1, cfg).clean_prob
    order = np.argsort(losses)
    assert np.all(np.diff(prob[order]) <= 1e-7)
    assert prob[-1] < 0.5  # the largest loss is noisy


def test_loss_history_averages_last_window_and_round_trips():
    history = LossHistory(num_samples=3, window=2)
    history.update(np.array([1.0, 2.0, 3.0]))
    history.update(np.array([3.0, 2.0, np.nan]))
    np.testing.assert_allclose(history.update(np.array([5.0, 4.0, 1.0])), [4.0, 3.0, 1.0])
    restored = LossHistory(num_samples=3, window=2)
    restored.load_state_dict(history.state_dict())
    np.testing.assert_allclose(restored.mean(), history.mean())
    assert len(restored) == 2


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------
def slow_average_precision(labels_row: np.ndarray, c: int, normalization: str) -> float:
    hits, total = 0, 0.0
    for rank, label in enumerate(labels_row, start=1):
        if label == c:
            hits += 1
            total += hits / rank
    if normalization == "list":
        return total / len(labels_row)
    return total / hits if hits else 0.0


@pytest.mark.parametrize("normalization", ["list", "hits"])
def test_vectorised_average_precision_matches_a_plain_loop(normalization):
    rng = np.random.default_rng(0)
    neighbor_labels = rng.integers(0, 6, size=(57, 33))
    fast = per_class_average_precision(neighbor_labels, 7, chunk_size=10,
                                       normalization=normalization)
    slow = np.array([[slow_average_precision(row, c, normalization) for c in range(7)]
                     for row in neighbor_labels])
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    assert np.all(fast[:, 6] == 0)  # a class never retrieved


def test_average_precision_rewards_the_class_holding_the_top_ranks():
    ap = per_class_average_precision(np.array([[0, 0, 1, 1, 2]]), 3, normalization="hits")[0]
    np.testing.assert_allclose(ap, [1.0, (1 / 3 + 2 / 4) / 2, 1 / 5], rtol=1e-6)
    ap = per_class_average_precision(np.array([[0, 0, 1, 1, 2]]), 3)[0]
    np.testing.assert_allclose(ap, [2 / 5, (1 / 3 + 2 / 4) / 5, 1 / 25], rtol=1e-6)


def test_one_rank_one_neighbour_never_outweighs_49_neighbours_below_it():
    """One neighbour of class 1 at rank 1, 49 of class 0 at ranks 2-50: class 0 has more and
    nearly as high-ranked evidence, so its soft label must be the larger under the default."""
    row = np.array([[1] + [0] * 49])
    listwise = per_class_average_precision(row, 2)[0]
    assert listwise[0] > 0.9 and listwise[1] == pytest.approx(1 / 50)
    hitwise = per_class_average_precision(row, 2, normalization="hits")[0]
    assert hitwise[1] == 1.0 and hitwise[0] < hitwise[1]  # the textbook AP prefers the one vote
    # Monotone: one more class-1 neighbour, or class 1's neighbour moved up, raises AP_1.
    more = per_class_average_precision(np.array([[1, 1] + [0] * 48]), 2)[0]
    later = per_class_average_precision(np.array([[0, 1] + [0] * 48]), 2)[0]
    assert more[1] > listwise[1] > later[1]


def test_faiss_and_torch_backends_agree():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(2000, 48)).astype(np.float32)
    queries = rng.normal(size=(300, 48)).astype(np.float32)
    f_scores, f_ids = knn_search(queries, gallery, 20, backend="faiss", query_chunk=128)
    t_scores, t_ids = knn_search(queries, gallery, 20, backend="torch", query_chunk=64)
    np.testing.assert_allclose(f_scores, t_scores, atol=1e-5)
    assert np.mean(f_ids == t_ids) > 0.99  # differences only where scores tie
    reference = gallery[f_ids] / np.linalg.norm(gallery[f_ids], axis=2, keepdims=True)
    cosine = np.einsum("qkd,qd->qk", reference, queries / np.linalg.norm(queries, axis=1, keepdims=True))
    np.testing.assert_allclose(f_scores, cosine, atol=1e-5)


def test_knn_search_clips_k_to_gallery_and_excludes_self():
    x, _ = clustered_embeddings(2, 5, 8)
    scores, ids = knn_search(x[:3], x, 50)
    assert ids.shape == (3, 10)
    assert np.array_equal(ids[:, 0], np.arange(3))
    _, ids = knn_search(x, x, 50, exclude_self=True, backend="torch")
    assert ids.shape == (10, 9)
    assert not np.any(ids == np.arange(10)[:, None])


def test_ivf_recall_against_exact_search_on_clustered_data():
    gallery, _ = clustered_embeddings(8, 2500, 32, subclusters=16, spread=0.25, seed=0)
    queries, _ = clustered_embeddings(8, 100, 32, subclusters=16, spread=0.25, seed=0)
    k = 20
    _, exact = knn_search(queries, gallery, k)
    _, approx = knn_search(queries, gallery, k, index="ivf", nlist=128, nprobe=16)
    recall = np.mean([len(np.intersect1d(a, e)) / k for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_relabelling_recovers_cluster_classes_despite_gallery_noise():
    gallery, gallery_labels = clustered_embeddings(4, 300, 32, spread=0.8, seed=0)
    rng = np.random.default_rng(0)
    flipped = rng.random(gallery_labels.size) < 0.15
    noisy_labels = np.where(flipped, rng.integers(0, 4, gallery_labels.size), gallery_labels)
    queries, query_labels = clustered_embeddings(4, 300, 32, spread=0.8, seed=0)  # same centres
    queries = queries[::3] + 0.01  # distinct points near the gallery's
    query_labels = query_labels[::3]
    result = retrieval_soft_labels(queries, gallery, noisy_labels, 4, RelabelConfig(k=30))
    assert relabel_accuracy(result.soft_labels, query_labels) >= 0.95
    np.testing.assert_allclose(result.soft_labels.sum(1), 1.0, rtol=1e-5)
    assert result.neighbor_ids.shape == (len(queries), 30)
    np.testing.assert_array_equal(result.new_labels, result.soft_labels.argmax(1))


def test_sharpen_keeps_argmax_and_raises_confidence():
    soft = np.array([[0.6, 0.4, 0.0]], np.float32)
    sharp = sharpen(soft, 0.5)
    np.testing.assert_allclose(sharp, [[0.36 / 0.52, 0.16 / 0.52, 0.0]], rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def two_class_memory(cfg: DCLConfig, seed: int = 0):
    x, labels = clustered_embeddings(3, 40, 16, spread=0.3, seed=seed)
    dcl = DistributionContrastiveLoss(3, 16, cfg)
    dcl.update_memory(torch.from_numpy(x), torch.from_numpy(labels))
    return dcl, torch.from_numpy(x), torch.from_numpy(labels)


def test_dcl_is_lower_at_own_class_mean_than_at_another_class_mean():
    dcl, x, labels = two_class_memory(DCLConfig(memory_per_class=64))
    _, means, _ = dcl.memory_stats()
    at_own = dcl(means[0:1].clone(), torch.tensor([0]))
    at_other = dcl(means[1:2].clone(), torch.tensor([0]))
    assert at_own.item() < 0.1 < at_other.item()


def test_dcl_gradient_flows_to_embeddings_and_only_clean_samples_count():
    dcl, x, labels = two_class_memory(DCLConfig(memory_per_class=64))
    emb = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)))
    emb.requires_grad_(True)
    clean = torch.tensor([True] * 4 + [False] * 4)
    loss = dcl(emb, labels[::15], clean)
    loss.backward()
    assert loss.item() > 0 and emb.grad[:4].abs().sum() > 0
    assert emb.grad[4:].abs().sum() == 0
    assert dcl.memory.grad is None


def test_dcl_without_clean_samples_is_a_grad_safe_zero():
    dcl = DistributionContrastiveLoss(3, 16, DCLConfig(memory_per_class=0))
    emb = torch.randn(4, 16, requires_grad=True)
    loss = dcl(emb, torch.tensor([0, 1, 2, 0]), torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and emb.grad is not None


def test_dcl_batch_mode_penalises_a_mislabelled_sample():
    x, labels = clustered_embeddings(3, 10, 16, spread=0.2, seed=1)
    dcl = DistributionContrastiveLoss(3, 16, DCLConfig(memory_per_class=0, temperature=0.1))
    right = dcl(torch.from_numpy(x), torch.from_numpy(labels))
    mislabelled = torch.from_numpy(labels).clone()
    mislabelled[0] = 1  # a class-0 embedding labelled 1
    wrong = dcl(torch.from_numpy(x), mislabelled)
    assert right.item() < 0.05 and wrong.item() > right.item() + 0.2
    # Leave-one-out: a class whose only sample is the query itself gives it nothing to compare with.
    alone = dcl(torch.from_numpy(x[:2]), torch.tensor([0, 1]))
    assert alone.item() == 0.0


def test_dcl_memory_is_fifo_and_survives_state_dict_round_trip():
    dcl = DistributionContrastiveLoss(2, 4, DCLConfig(memory_per_class=3))
    batch = torch.arange(20, dtype=torch.float32).reshape(5, 4)  # rows 0..4, all class 0
    dcl.update_memory(batch[:2], torch.tensor([0, 0]))
    dcl.update_memory(batch[2:], torch.tensor([0, 0, 0]))
    assert dcl.memory_count.tolist() == [3, 0]
    stored = sorted(dcl.memory[0, :, 0].tolist())
    assert stored == [8.0, 12.0, 16.0]  # the three newest rows (first column 4*i)
    restored = DistributionContrastiveLoss(2, 4, DCLConfig(memory_per_class=3))
    restored.load_state_dict(dcl.state_dict())
    assert torch.equal(restored.memory, dcl.memory) and restored.memory_ptr.tolist() == dcl.memory_ptr.tolist()


def test_soft_cross_entropy_matches_hard_cross_entropy_on_one_hot_targets():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), cross_entropy(logits, labels))
    assert soft_cross_entropy(logits, one_hot, reduction="mean").shape == ()


def test_weighted_mean_weights_and_zero_weights():
    loss = torch.tensor([1.0, 3.0, 5.0], requires_grad=True)
    assert weighted_mean(loss, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(2.0)
    zero = weighted_mean(loss, torch.zeros(3))
    zero.backward()
    assert zero.item() == 0.0 and loss.grad is not None


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
def test_noise_detection_metrics_on_a_handmade_example():
    clean_prob = np.array([0.9, 0.8, 0.2, 0.1, 0.4, 0.7])
    changed = np.array([False, False, True, True, False, True])
    m = noise_detection_metrics(clean_prob, changed, threshold=0.5)
    # predicted noisy: samples 2, 3, 4 -> 2 true positives of 3 predicted, of 3 noisy.
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # noisy scores (0.8, 0.9, 0.3) vs clean (0.1, 0.2, 0.6): 8 of 9 pairs ordered right.
    assert m["auc"] == pytest.approx(8 / 9)
    assert np.isnan(noise_detection_metrics(clean_prob, np.zeros(6, bool))["auc"])


def test_relabel_tv_distance_and_clean_ratio_on_handmade_examples():
    soft = np.array([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7]])
    assert relabel_accuracy(soft, np.array([0, 1])) == 0.5
    tv = total_variation_distance(soft, np.array([[3.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(tv, [0.0, 0.5 * (abs(0.1 - 1 / 3) + abs(0.2 - 1 / 3) + abs(0.7 - 1 / 3))])
    ratio = per_class_clean_ratio(np.array([True, False, True, True]), np.array([0, 0, 1, 1]), 3)
    np.testing.assert_allclose(ratio[:2], [0.5, 1.0])
    assert np.isnan(ratio[2])


def test_mix_given_keeps_the_clean_probability_share_of_the_given_label():
    from fer_robust.robust.selection import split_and_relabel
    losses, labels, noisy = planted_losses(num_classes=4, per_class=300, noise_rate=0.3)
    emb, _ = clustered_embeddings(4, 300, 16, spread=0.5, seed=1)
    plain = split_and_relabel(losses, emb, labels, 4, SplitConfig(), RelabelConfig(k=20))
    mixed = split_and_relabel(losses, emb, labels, 4, SplitConfig(), RelabelConfig(k=20, mix_given=True))
    rel = plain.relabeled_mask
    assert rel.any() and np.array_equal(rel, mixed.relabeled_mask)
    p = plain.clean_prob[rel, None]
    onehot = np.eye(4, dtype=np.float32)[labels[rel]]
    np.testing.assert_allclose(mixed.soft_labels[rel], p * onehot + (1 - p) * plain.soft_labels[rel],
                               atol=1e-6)
    np.testing.assert_allclose(mixed.soft_labels.sum(1), 1.0, rtol=1e-5)
    # clean samples keep their one-hot label either way
    np.testing.assert_array_equal(mixed.soft_labels[~rel], plain.soft_labels[~rel])


def test_given_floor_keeps_at_least_that_share_of_the_given_label():
    """The given label's share of a relabelled target is max(clean probability, floor) under
    mix_given and the floor alone without it; the argmax stays the retrieval label's where the
    floor is below the soft label's margin, and clean samples are untouched."""
    from fer_robust.robust.selection import split_and_relabel
    losses, labels, noisy = planted_losses(num_classes=4, per_class=300, noise_rate=0.3)
    emb, _ = clustered_embeddings(4, 300, 16, spread=0.5, seed=1)
    plain = split_and_relabel(losses, emb, labels, 4, SplitConfig(), RelabelConfig(k=20))
    rel = plain.relabeled_mask
    onehot = np.eye(4, dtype=np.float32)[labels[rel]]
    floored = split_and_relabel(losses, emb, labels, 4, SplitConfig(),
                                RelabelConfig(k=20, given_floor=0.3))
    assert np.array_equal(floored.relabeled_mask, rel)
    np.testing.assert_allclose(floored.soft_labels[rel], 0.3 * onehot + 0.7 * plain.soft_labels[rel],
                               atol=1e-6)
    np.testing.assert_array_equal(floored.soft_labels[~rel], plain.soft_labels[~rel])
    # Under mix_given: samples with losses between the two modes, flagged by a strict threshold,
    # have clean probabilities on both sides of the floor.
    ambiguous = losses.copy()
    idx = np.flatnonzero(~noisy)[::10]
    ambiguous[idx] = np.linspace(losses[~noisy].mean(), losses[noisy].mean(), idx.size)
    strict = SplitConfig(threshold=0.9)
    ref = split_and_relabel(ambiguous, emb, labels, 4, strict, RelabelConfig(k=20))
    both = split_and_relabel(ambiguous, emb, labels, 4, strict,
                             RelabelConfig(k=20, mix_given=True, given_floor=0.3))
    rel2 = ref.relabeled_mask
    assert (ref.clean_prob[rel2] < 0.3).any() and (ref.clean_prob[rel2] > 0.3).any()
    p = np.maximum(ref.clean_prob[rel2, None], 0.3)
    np.testing.assert_allclose(both.soft_labels[rel2],
                               p * np.eye(4, dtype=np.float32)[labels[rel2]]
                               + (1 - p) * ref.soft_labels[rel2], atol=1e-6)
    np.testing.assert_allclose(both.soft_labels.sum(1), 1.0, rtol=1e-5)
    # a confident retrieval label (top share > 0.3 / 0.7 + the given label's share) keeps its argmax
    sure = rel & (plain.soft_labels.max(1) > 0.75)
    assert sure.any()
    np.testing.assert_array_equal(floored.new_labels[sure], plain.new_labels[sure])


def test_model_weight_blends_the_model_prediction_into_the_retrieval_label():
    """With w > 0 a relabelled target is (1 - w) retrieval + w model probabilities; a model that
    knows the true labels then lifts relabelling accuracy above retrieval's alone."""
    from fer_robust.robust.selection import split_and_relabel
    losses, labels, noisy = planted_losses(num_classes=4, per_class=300, noise_rate=0.3)
    emb, true = clustered_embeddings(4, 300, 16, spread=2.0, seed=1)
    probs = np.full((len(labels), 4), 0.1, np.float32)
    probs[np.arange(len(labels)), true] = 0.7
    plain = split_and_relabel(losses, emb, labels, 4, SplitConfig(), RelabelConfig(k=20))
    blend = split_and_relabel(losses, emb, labels, 4, SplitConfig(),
                              RelabelConfig(k=20, model_weight=0.5), probs=probs)
    rel = plain.relabeled_mask
    assert rel.any() and np.array_equal(rel, blend.relabeled_mask)
    np.testing.assert_allclose(blend.soft_labels[rel], 0.5 * plain.soft_labels[rel] + 0.5 * probs[rel],
                               atol=1e-6)
    np.testing.assert_array_equal(blend.soft_labels[~rel], plain.soft_labels[~rel])
    assert (blend.new_labels[rel] == true[rel]).mean() > (plain.new_labels[rel] == true[rel]).mean()
    with pytest.raises(ValueError, match="model's probabilities"):
        split_and_relabel(losses, emb, labels, 4, SplitConfig(), RelabelConfig(k=20, model_weight=0.5))
    # w = 1 (the "retrieval" ablation): the model's prediction alone, whatever the embeddings say.
    alone = split_and_relabel(losses, np.zeros_like(emb), labels, 4, SplitConfig(),
                              RelabelConfig(k=20, model_weight=1.0), probs=probs)
    assert np.array_equal(alone.relabeled_mask, rel)
    np.testing.assert_allclose(alone.soft_labels[rel], probs[rel], atol=1e-6)


def test_global_scope_handles_a_class_whose_labels_are_mostly_noise():
    """Symmetric noise on an imbalanced set: a small class receives far more wrong labels than it
    has right ones, so the model barely learns it and its few right labels get high losses too.
    Its own GMM then cuts its high-loss mode in two; one GMM over all classes calls it noisy."""
    rng = np.random.default_rng(0)
    sizes, noise, clean_loss = [2000, 2000, 300], [0.2, 0.2, 0.9], [0.3, 0.3, 1.8]
    losses, labels, changed = [], [], []
    for c, (n, rate) in enumerate(zip(sizes, noise)):
        wrong = rng.random(n) < rate
        right = np.abs(rng.normal(clean_loss[c], 0.3, n))
        losses.append(np.where(wrong, rng.normal(3.0, 0.5, n), right))
        labels.append(np.full(n, c))
        changed.append(wrong)
    losses, labels, changed = map(np.concatenate, (losses, labels, changed))
    small = labels == 2
    per_class = class_dependent_split(losses, labels, 3, SplitConfig())
    global_ = class_dependent_split(losses, labels, 3, SplitConfig(scope="global"))
    f1 = lambda split, m: noise_detection_metrics(split.clean_prob[m], changed[m])["f1"]  # noqa: E731
    assert f1(global_, small) > f1(per_class, small) + 0.03
    assert f1(global_, slice(None)) > f1(per_class, slice(None))
    assert all(info.fallback == "global" for info in global_.class_info)


def test_class_relative_loss_on_a_handmade_example():
    """tau_c: the mean probability of class c over the samples predicted as c; the loss is
    -log(p_y / tau_y) clipped at 0; a class never predicted keeps its plain cross-entropy."""
    probs = np.array([[0.9, 0.05, 0.05],   # predicted 0
                      [0.7, 0.2, 0.1],     # predicted 0: tau_0 = 0.8
                      [0.3, 0.4, 0.3],     # predicted 1: tau_1 = 0.4
                      [0.5, 0.4, 0.1]])    # predicted 0? no: 0.5 > 0.4, so predicted 0
    probs[3] = [0.3, 0.6, 0.1]             # predicted 1: tau_1 = (0.4 + 0.6) / 2 = 0.5
    labels = np.array([0, 0, 1, 2])
    expected = [max(0.0, np.log(0.8 / 0.9)), np.log(0.8 / 0.7), np.log(0.5 / 0.4),
                -np.log(0.1)]  # class 2 is never predicted: tau_2 = 1
    np.testing.assert_allclose(class_relative_losses(probs, labels), expected, rtol=1e-6)


def test_class_relative_split_keeps_the_clean_samples_of_a_hard_class():
    """The model is as sure of a hard class's right labels as of an easy class's, up to a factor
    (p_y = r * tau_class: tau 0.9 for the easy classes, 0.3 for the hard one, r ~ U(0.7, 1.1) for
    a right label and U(0.02, 0.2) for a wrong one, 25% wrong). The hard class's clean samples
    then have cross-entropies as high as the wrong labels': one mixture over the raw loss calls
    them noisy; over the class-relative loss the class factor drops out and they are kept."""
    rng = np.random.default_rng(0)
    n, num_classes = 4000, 5
    tau = np.array([0.9, 0.9, 0.9, 0.9, 0.3])
    true = rng.integers(0, num_classes, n)
    wrong = rng.random(n) < 0.25
    given = np.where(wrong, (true + rng.integers(1, num_classes, n)) % num_classes, true)
    probs = np.zeros((n, num_classes))
    probs[np.arange(n), true] = rng.uniform(0.7, 1.0, n) * tau[true]
    probs[np.arange(n), given] = np.where(wrong, rng.uniform(0.02, 0.2, n) * tau[given],
                                          probs[np.arange(n), given])
    rest = (1 - probs.sum(1)) / (num_classes - 1 - wrong)  # the others share what is left
    probs = np.where(probs == 0, rest[:, None], probs)
    ce = -np.log(probs[np.arange(n), given])
    plain = class_dependent_split(ce, given, num_classes, SplitConfig(scope="global"))
    relative = class_dependent_split(class_relative_losses(probs, given), given, num_classes,
                                     SplitConfig(scope="global"))
    hard_clean = (true == 4) & ~wrong
    assert plain.clean_mask[hard_clean].mean() < 0.5
    assert relative.clean_mask[hard_clean].mean() > 0.95
    assert noise_detection_metrics(relative.clean_prob, wrong)["f1"] > 0.95
    # The decision function applies it from the pass's probabilities.
    from fer_robust.robust.selection import split_and_relabel
    emb = np.eye(num_classes, dtype=np.float32)[true]
    decision = split_and_relabel(ce, emb, given, num_classes,
                                 SplitConfig(scope="global", loss="class_relative"),
                                 RelabelConfig(k=5, backend="torch"), probs=probs)
    np.testing.assert_array_equal(decision.clean_mask, relative.clean_mask)
    with pytest.raises(ValueError, match="probabilities"):
        split_and_relabel(ce, emb, given, num_classes, SplitConfig(loss="class_relative"),
                          RelabelConfig(k=5, backend="torch"))


def test_masked_images_count_for_no_classification_term_without_classify_masked():
    """``model.mim.classify_masked=False``: the batch's MIM-masked images drop out of ce,
    local_ce and soft_ce; the unmasked ones weigh as before."""
    from types import SimpleNamespace

    from fer_robust.config import Config, StageConfig
    from fer_robust.engine.sample_state import SampleState
    from fer_robust.engine.stages import build_stage
    from fer_robust.engine.trainer import Trainer
    from fer_robust.methods import build_method

    torch.manual_seed(0)
    n, k = 8, 4
    labels, index = torch.randint(0, k, (n,)), torch.arange(n)
    state = SampleState(given_labels=labels.numpy(), num_classes=k)
    state.soft_weight[:] = 1.0
    state.soft_labels[:] = 1.0 / k
    out = {"logits": torch.randn(n, k), "local_logits": torch.randn(n, k),
           "mim_loss": torch.tensor(0.3), "mim_index": torch.tensor([1, 5])}
    stage = build_stage(StageConfig(kind="semi_supervised", loss_weights={
        "ce": 1.0, "local_ce": 1.0, "soft_ce": 1.0, "mim": 1.0}), 0)
    kept = torch.tensor([0, 2, 3, 4, 6, 7])

    def terms(classify_masked):
        cfg = Config()
        cfg.model.mim.classify_masked = classify_masked
        stub = SimpleNamespace(cfg=cfg, sample_state=state, dcl=None,
                               method=build_method(cfg, n, k))
        return Trainer.compute_losses(stub, out, labels, index, stage)

    every, unmasked = terms(True), terms(False)
    assert torch.allclose(every["ce"], torch.nn.functional.cross_entropy(out["logits"], labels))
    assert torch.allclose(unmasked["ce"], torch.nn.functional.cross_entropy(out["logits"][kept],
                                                                            labels[kept]))
    assert torch.allclose(unmasked["local_ce"], torch.nn.functional.cross_entropy(
        out["local_logits"][kept], labels[kept]))
    assert torch.allclose(unmasked["soft_ce"], soft_cross_entropy(out["logits"][kept],
                          torch.full((6, k), 1.0 / k)).mean()
                          + soft_cross_entropy(out["local_logits"][kept],
                                               torch.full((6, k), 1.0 / k)).mean())
    assert unmasked["mim"] == every["mim"]


def six_clean_two_relabelled(n: int, k: int):
    """Random labels for a batch of ``n`` (n >= 8) and a sample state whose last two samples
    train on random soft labels, the others on their given labels: labels, index, the clean mask,
    the state and the soft labels."""
    from fer_robust.engine.sample_state import SampleState

    labels, index = torch.randint(0, k, (n,)), torch.arange(n)
    clean = torch.arange(n) < n - 2
    state = SampleState(given_labels=labels.numpy(), num_classes=k)
    state.ce_weight[:] = clean.numpy()
    state.soft_weight[:] = (~clean).numpy()
    soft_targets = torch.softmax(torch.randn(n, k), 1)
    state.soft_labels[:] = soft_targets.numpy()
    return labels, index, clean, state, soft_targets


def test_loss_normalization_batch_weighs_every_sample_alike():
    """``robust.loss_normalization``: "group" averages ce over the clean samples and soft_ce over
    the relabelled ones; "batch" divides both by the batch size, so their sum is a plain mean over
    the batch of each sample's own term."""
    from types import SimpleNamespace

    from fer_robust.config import Config, StageConfig
    from fer_robust.engine.stages import build_stage
    from fer_robust.engine.trainer import Trainer
    from fer_robust.methods import build_method

    torch.manual_seed(0)
    n, k = 8, 4
    labels, index, clean, state, soft_targets = six_clean_two_relabelled(n, k)
    out = {"logits": torch.randn(n, k)}
    stage = build_stage(StageConfig(kind="semi_supervised",
                                    loss_weights={"ce": 1.0, "soft_ce": 1.0}), 0)

    def terms(normalization):
        cfg = Config()
        cfg.robust.loss_normalization = normalization
        stub = SimpleNamespace(cfg=cfg, sample_state=state, dcl=None,
                               method=build_method(cfg, n, k))
        return Trainer.compute_losses(stub, out, labels, index, stage)

    hard = torch.nn.functional.cross_entropy(out["logits"], labels, reduction="none")
    soft = soft_cross_entropy(out["logits"], soft_targets)
    group, batch = terms("group"), terms("batch")
    assert torch.allclose(group["ce"], hard[clean].mean())
    assert torch.allclose(group["soft_ce"], soft[~clean].mean())
    assert torch.allclose(batch["ce"] + batch["soft_ce"], torch.where(clean, hard, soft).mean())
    # The relabelled quarter of the batch weighs a quarter, not half, of the sum.
    assert torch.allclose(batch["soft_ce"], soft[~clean].sum() / n)


def test_soft_gce_is_soft_ce_at_q_zero_gce_on_one_hot_targets_and_weighs_classes_by_p_q():
    torch.manual_seed(0)
    logits = torch.randn(5, 4) * 2
    targets = torch.softmax(torch.randn(5, 4), 1)
    labels = torch.tensor([0, 1, 2, 3, 1])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert torch.equal(soft_generalized_cross_entropy(logits, targets, 0.0),
                       soft_cross_entropy(logits, targets))
    assert torch.allclose(soft_generalized_cross_entropy(logits, targets, 1e-6),
                          soft_cross_entropy(logits, targets), rtol=1e-4)
    assert torch.allclose(soft_generalized_cross_entropy(logits, one_hot, 0.7),
                          generalized_cross_entropy(logits, labels, 0.7), atol=1e-6)
    p = logits.softmax(1)
    assert torch.allclose(soft_generalized_cross_entropy(logits, targets, 0.5),
                          (targets * (1 - p ** 0.5) / 0.5).sum(1), atol=1e-6)
    # The logit gradient is soft CE's with each target class's pull scaled by p_c^q.
    z = logits.clone().requires_grad_(True)
    soft_generalized_cross_entropy(z, targets, 0.5).sum().backward()
    scaled = targets * p ** 0.5
    expected = p * scaled.sum(1, keepdim=True) - scaled   # d/dz of -sum_c w_c log p_c, w fixed
    assert torch.allclose(z.grad, expected, atol=1e-5)


def test_robust_loss_q_bounds_the_robust_stages_terms_and_leaves_warmup_cross_entropy():
    """``robust.clean_loss_q`` / ``robust.soft_loss_q``: in a robust stage ce and local_ce are GCE
    on the training labels and soft_ce is soft GCE, weighted as before; a warm-up stage with the
    same settings trains on plain cross-entropy (so a branch from the end of the warm-up may
    change them)."""
    from types import SimpleNamespace

    from fer_robust.config import Config, StageConfig
    from fer_robust.engine.stages import build_stage
    from fer_robust.engine.trainer import Trainer
    from fer_robust.methods import build_method

    torch.manual_seed(0)
    n, k, q = 8, 4, 0.7
    labels, index, clean, state, soft_targets = six_clean_two_relabelled(n, k)
    out = {"logits": torch.randn(n, k) * 3, "local_logits": torch.randn(n, k) * 3}
    weights = {"ce": 1.0, "local_ce": 0.5, "soft_ce": 1.0}
    cfg = Config()
    cfg.robust.clean_loss_q, cfg.robust.soft_loss_q = q, q
    stub = SimpleNamespace(cfg=cfg, sample_state=state, dcl=None, method=build_method(cfg, n, k))

    robust = Trainer.compute_losses(stub, out, labels, index,
                                    build_stage(StageConfig(kind="semi_supervised",
                                                            loss_weights=weights), 0))
    for term, logits in (("ce", out["logits"]), ("local_ce", out["local_logits"])):
        assert torch.allclose(robust[term],
                              generalized_cross_entropy(logits, labels, q)[clean].mean())
    assert torch.allclose(robust["soft_ce"], sum(
        soft_generalized_cross_entropy(out[key], soft_targets, q)[~clean].mean()
        for key in ("logits", "local_logits")))
    # GCE is below CE (it is bounded by 1/q): the term really changed.
    assert robust["ce"] < cross_entropy(out["logits"], labels)[clean].mean()

    state.reset_to_given()
    warm = Trainer.compute_losses(stub, out, labels, index,
                                  build_stage(StageConfig(kind="warmup",
                                                          loss_weights={"ce": 1.0}), 0))
    assert torch.allclose(warm["ce"], cross_entropy(out["logits"], labels).mean())


def test_mixup_trains_each_term_on_the_mixture_of_its_own_and_its_partners_targets():
    """``robust.mixup_alpha``: image i is mixed with image B-1-i at weight lam, and every
    classification term becomes lam * term(own targets) + (1 - lam) * term(partner's targets),
    each with its own weight (the clean set's hard label, the relabelled set's soft label); at
    lam = 1 nothing changes."""
    from types import SimpleNamespace

    from fer_robust.config import Config, StageConfig
    from fer_robust.engine.mixup import mix_images
    from fer_robust.engine.stages import build_stage
    from fer_robust.engine.trainer import Trainer
    from fer_robust.methods import build_method

    torch.manual_seed(0)
    n, k, lam = 8, 4, 0.7
    labels, index, clean, state, soft_targets = six_clean_two_relabelled(n, k)
    out = {"logits": torch.randn(n, k) * 3, "local_logits": torch.randn(n, k) * 3}
    stage = build_stage(StageConfig(kind="semi_supervised",
                                    loss_weights={"ce": 1.0, "local_ce": 0.5, "soft_ce": 1.0}), 0)
    cfg = Config()
    cfg.robust.loss_normalization = "batch"
    stub = SimpleNamespace(cfg=cfg, sample_state=state, dcl=None, method=build_method(cfg, n, k))

    mixed = Trainer.compute_losses(stub, out, labels, index, stage, lam)
    partner = torch.arange(n - 1, -1, -1)
    w_clean, w_soft = clean.float(), (~clean).float()
    for term, logits in (("ce", out["logits"]), ("local_ce", out["local_logits"])):
        own = (cross_entropy(logits, labels) * w_clean).mean()
        other = (cross_entropy(logits, labels[partner]) * w_clean[partner]).mean()
        assert torch.allclose(mixed[term], lam * own + (1 - lam) * other)
    expected_soft = sum(
        lam * (soft_cross_entropy(out[key], soft_targets) * w_soft).mean()
        + (1 - lam) * (soft_cross_entropy(out[key], soft_targets[partner]) * w_soft[partner]).mean()
        for key in ("logits", "local_logits"))
    assert torch.allclose(mixed["soft_ce"], expected_soft)
    # The two relabelled images are the last two; mixed, the first two images' losses carry
    # their soft labels too: the term is not the un-mixed one.
    plain = Trainer.compute_losses(stub, out, labels, index, stage)
    assert not torch.allclose(mixed["soft_ce"], plain["soft_ce"])
    unmixed = Trainer.compute_losses(stub, out, labels, index, stage, 1.0)
    assert all(torch.allclose(unmixed[t], plain[t]) for t in plain)

    images = torch.randn(5, 3, 4, 4)
    assert torch.allclose(mix_images(images, lam), lam * images + (1 - lam) * images.flip(0))
    assert torch.equal(mix_images(images, 1.0), images)


def test_batch_mixer_weights_favour_the_own_image_and_repeat_per_epoch_and_process():
    from fer_robust.engine.mixup import BatchMixer

    mixer = BatchMixer(1.0, seed=3)

    def epoch_weights(epoch, process=0):
        mixer.start_epoch(epoch, process)
        return [mixer.draw() for _ in range(200)]

    first = epoch_weights(4)
    assert min(first) >= 0.5 and max(first) <= 1.0
    # Beta(1, 1) folded onto [0.5, 1] is uniform there: mean 0.75.
    assert abs(np.mean(first) - 0.75) < 0.03
    assert epoch_weights(4) == first
    assert epoch_weights(5) != first and epoch_weights(4, process=1) != first
    with pytest.raises(ValueError, match="mixup_alpha"):
        BatchMixer(0.0, seed=3)


def test_pass_teacher_averages_from_its_start_and_restores_exactly():
    from fer_robust.engine.teacher import PassTeacher

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    teacher = PassTeacher(0.9)
    assert not teacher.started and teacher.state_dict() == {}
    with pytest.raises(RuntimeError):
        teacher.update(model)
    teacher.start(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    teacher.start(model)                       # a second start keeps the running average
    teacher.update(model)
    averaged = teacher.module[0].weight
    assert torch.allclose(averaged, 0.9 * start["0.weight"] + 0.1 * model[0].weight)
    assert not teacher.module.training
    restored = PassTeacher(0.9)
    restored.load_state_dict(model, teacher.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(),
                                                 teacher.state_dict().values()))
    restored.load_state_dict(model, {})         # a checkpoint from before the start
    assert not restored.started


def test_dcl_memory_takes_no_masked_image_without_classify_masked():
    """The DCL memory's per-step update keeps the same images as the classification terms: clean
    ones, minus the MIM-masked ones when ``classify_masked`` is off."""
    from types import SimpleNamespace

    from fer_robust.engine.sample_state import SampleState
    from fer_robust.engine.trainer import Trainer, classified_mask

    n, k, d = 6, 2, 4
    labels, index = torch.zeros(n, dtype=torch.long), torch.arange(n)
    state = SampleState(given_labels=labels.numpy(), num_classes=k)
    state.ce_weight[:] = [1, 1, 1, 1, 0, 0]                  # samples 4, 5 called noisy
    embedding = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    out = {"logits": torch.zeros(n, k), "mim_index": torch.tensor([1, 4])}
    for classify_masked, expected in ((True, [0, 1, 2, 3]), (False, [0, 2, 3])):
        dcl = DistributionContrastiveLoss(k, d, DCLConfig(memory_per_class=8))
        stub = SimpleNamespace(accelerator=SimpleNamespace(gather=lambda x: x),
                               sample_state=state, dcl=dcl)
        Trainer._update_dcl_memory(stub, embedding, labels, index,
                                   classified_mask(out, n, classify_masked))
        count = int(dcl.memory_count[0])
        stored = sorted(int(row[0]) // d for row in dcl.memory[0, :count])
        assert stored == expected


# --------------------------------------------------------------------------------------------------
# Dataset-level noise estimate and gate (robust.noise_gate)
# --------------------------------------------------------------------------------------------------
def noisy_posterior_probs(true: np.ndarray, num_classes: int, rate: float, seed: int = 0):
    """Softmax outputs of a model that learnt the noisy posterior of symmetric noise at ``rate``
    (1 - rate on the true class, rate spread over the others), blurred towards uniform for 70%
    of the images, so that only the surest images of a class carry its full posterior."""
    rng = np.random.default_rng(seed)
    posterior = np.full((len(true), num_classes), rate / (num_classes - 1))
    posterior[np.arange(len(true)), true] = 1.0 - rate
    sureness = np.where(rng.random((len(true), 1)) < 0.3, 1.0,
                        rng.uniform(0.3, 1.0, (len(true), 1)))
    return sureness * posterior + (1 - sureness) / num_classes


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_noise_rate_estimate_reads_the_rate_of_symmetric_noise(rate):
    """A model of the noisy posterior: the anchor estimate is the noise rate, within 0.03, and
    about 0 under clean labels, on classes of unequal sizes (each holding more sure images than
    its anchors)."""
    from fer_robust.robust.noise_rate import estimate_noise_rate
    rng = np.random.default_rng(1)
    true = np.repeat(np.arange(5), [600, 300, 250, 900, 250])
    given = np.where(rng.random(len(true)) < rate, (true + rng.integers(1, 5, len(true))) % 5, true)
    probs = noisy_posterior_probs(true, 5, rate)
    assert estimate_noise_rate(probs, given) == pytest.approx(rate, abs=0.03)
    with pytest.raises(ValueError, match="quantile"):
        estimate_noise_rate(probs, given, quantile=1.0)


def test_noise_gate_takes_clean_labels_as_clean_on_its_first_reading_only():
    """Below the threshold the decision keeps every sample clean at its given label and relabels
    nothing; the first pass's reading holds for later passes, survives a state-dict round trip,
    and a gate that reads noise leaves the decision exactly as without a gate."""
    from fer_robust.robust.noise_rate import NoiseGate
    from fer_robust.robust.selection import split_and_relabel
    losses, labels, noisy = planted_losses(num_classes=4, per_class=300, noise_rate=0.3)
    emb, _ = clustered_embeddings(4, 300, 16, spread=0.5, seed=1)
    true = np.where(noisy, (labels + 1) % 4, labels)
    clean_looking = noisy_posterior_probs(labels, 4, 0.02)
    noisy_looking = noisy_posterior_probs(true, 4, 0.3)
    cfgs = (SplitConfig(), RelabelConfig(k=20))

    gate = NoiseGate(threshold=0.15)
    first = split_and_relabel(losses, emb, labels, 4, *cfgs, probs=clean_looking, noise_gate=gate)
    assert first.labels_taken_as_clean and first.noise_rate_estimate < 0.15
    assert first.clean_mask.all() and not first.relabeled_mask.any()
    np.testing.assert_array_equal(first.new_labels, labels)
    # a later pass that reads noise does not reopen the split: the run's reading is the first one
    later = split_and_relabel(losses, emb, labels, 4, *cfgs, probs=noisy_looking, noise_gate=gate)
    assert later.labels_taken_as_clean and later.noise_rate_estimate > 0.15
    restored = NoiseGate(threshold=0.15)
    restored.load_state_dict(gate.state_dict())
    assert restored.first_estimate == gate.first_estimate and restored.labels_look_clean
    legacy = NoiseGate(threshold=0.15)
    legacy.load_state_dict({})  # a checkpoint from before the gate: no reading yet
    assert np.isnan(legacy.first_estimate) and not legacy.labels_look_clean

    reading_noise = NoiseGate(threshold=0.15)
    gated = split_and_relabel(losses, emb, labels, 4, *cfgs, probs=noisy_looking,
                              noise_gate=reading_noise)
    plain = split_and_relabel(losses, emb, labels, 4, *cfgs, probs=noisy_looking)
    assert not gated.labels_taken_as_clean and not reading_noise.labels_look_clean
    assert gated.noise_rate_estimate == pytest.approx(0.3, abs=0.05)
    for name in ("clean_prob", "clean_mask", "soft_labels", "relabeled_mask", "new_labels"):
        np.testing.assert_array_equal(getattr(gated, name), getattr(plain, name))
    assert (~gated.clean_mask).sum() > 100
    with pytest.raises(ValueError, match="noise_gate"):
        split_and_relabel(losses, emb, labels, 4, *cfgs, noise_gate=NoiseGate(0.15))
