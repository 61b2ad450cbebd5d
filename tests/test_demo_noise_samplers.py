"""Demo data, label noise, samplers and transforms: behaviour checked with real numbers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fer_robust.config import AugmentConfig, DataConfig, NoiseConfig
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data.demo import (DEMO_CLASSES, build_demo_dataset, draw_face,
                                  save_demo_as_image_folder)
from fer_robust.data.noise import inject_label_noise, load_noisy_labels, save_noisy_labels
from fer_robust.data.samplers import (ClassBalancedSampler, EpochShuffleSampler,
                                      MinimalRandomResampler, build_sampler)
from fer_robust.data.transforms import build_transform, denormalize


def _demo_cfg(**kw) -> DataConfig:
    base = dict(img_size=64, demo_train_per_class=6, demo_val_per_class=3, demo_test_per_class=2)
    base.update(kw)
    return DataConfig(**base)


# --------------------------------------------------------------------------------------------------
# Demo data
# --------------------------------------------------------------------------------------------------
def test_demo_classes_are_the_seven_expressions_in_order():
    assert DEMO_CLASSES == ("neutral", "happy", "sad", "surprise", "angry", "disgust", "fear")
    assert DEMO_CLASSES == DATASET_SPECS["demo"].classes


def test_demo_split_sizes_labels_paths_and_synthetic_flag():
    ds = build_demo_dataset(_demo_cfg(), "train")
    assert len(ds) == 42 and ds.classes == list(DEMO_CLASSES) and ds.name == "demo"
    assert np.bincount(ds.targets).tolist() == [6] * 7
    assert ds.paths[123 % 42] == "demo:train/000039" and ds.synthetic is True
    assert len(build_demo_dataset(_demo_cfg(), "val")) == 21
    assert len(build_demo_dataset(_demo_cfg(), "test")) == 14
    img, label, index = ds[5]
    assert img.size == (64, 64) and img.mode == "RGB" and label == 5 and index == 5
    with pytest.raises(ValueError, match="split"):
        build_demo_dataset(_demo_cfg(), "holdout")


def test_demo_image_is_regenerated_identically_and_depends_on_seed_and_split():
    a = build_demo_dataset(_demo_cfg(split_seed=3), "train")
    b = build_demo_dataset(_demo_cfg(split_seed=3), "train")
    # Asked in a different order and after a pickle round trip (as a loader worker would).
    b = pickle.loads(pickle.dumps(b))
    for i in (17, 0, 41):
        assert np.array_equal(np.asarray(a.load_image(i)), np.asarray(b.load_image(i)))
    other_seed = build_demo_dataset(_demo_cfg(split_seed=4), "train")
    val = build_demo_dataset(_demo_cfg(split_seed=3), "val")
    first = np.asarray(a.load_image(0), dtype=np.int16)
    assert np.abs(first - np.asarray(other_seed.load_image(0), dtype=np.int16)).mean() > 10
    assert np.abs(first - np.asarray(val.load_image(0), dtype=np.int16)).mean() > 10


def test_draw_face_size_and_invalid_expression():
    img = draw_face(3, np.random.default_rng(0), 48)
    assert img.size == (48, 48) and img.mode == "RGB"
    with pytest.raises(ValueError, match="expression"):
        draw_face(7, np.random.default_rng(0), 48)


def test_same_random_state_gives_same_face_whatever_the_expression_so_only_the_face_differs():
    # With identical nuisance draws, two expressions differ only in the facial features: a small
    # fraction of the pixels, inside the face.
    neutral = np.asarray(draw_face(0, np.random.default_rng(7), 64), dtype=np.int16)
    for expression in range(1, 7):
        face = np.asarray(draw_face(expression, np.random.default_rng(7), 64), dtype=np.int16)
        changed = (np.abs(neutral - face).max(axis=2) > 10).mean()
        assert 0.005 < changed < 0.15, (DEMO_CLASSES[expression], changed)


def test_demo_expressions_are_learnable_but_not_trivially():
    # Histograms of gradient orientations (8-px cells) + a ridge classifier: far above chance
    # (1/7 = 14%); raw pixels with a nearest-centroid rule stay near chance, because faces move,
    # scale, rotate and vary in colour and lighting.
    from sklearn.linear_model import RidgeClassifier

    cfg = _demo_cfg(demo_train_per_class=60, demo_val_per_class=30)
    train, val = build_demo_dataset(cfg, "train"), build_demo_dataset(cfg, "val")

    def features(ds):
        gray = np.stack([np.asarray(ds.load_image(i).convert("L"), np.float32)
                         for i in range(len(ds))])
        gy, gx = np.gradient(gray, axis=(1, 2))
        magnitude = np.hypot(gx, gy)
        orientation = np.minimum(((np.arctan2(gy, gx) % np.pi) / np.pi * 9).astype(int), 8)
        hist = np.zeros(gray.shape + (9,), np.float32)
        np.put_along_axis(hist, orientation[..., None], magnitude[..., None], axis=3)
        n = len(gray)
        cells = hist.reshape(n, 8, 8, 8, 8, 9).sum(axis=(2, 4))
        cells /= np.linalg.norm(cells, axis=-1, keepdims=True) + 1e-3
        return cells.reshape(n, -1)

    clf = RidgeClassifier(alpha=10.0).fit(features(train), train.targets)
    accuracy = (clf.predict(features(val)) == val.targets).mean()
    assert accuracy > 0.6, accuracy
    pixels_train = np.stack([np.asarray(train.load_image(i), np.float32).ravel()
                             for i in range(len(train))])
    pixels_val = np.stack([np.asarray(val.load_image(i), np.float32).ravel()
                           for i in range(len(val))])
    centroids = np.stack([pixels_train[train.targets == c].mean(0) for c in range(7)])
    nearest = ((pixels_val[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == val.targets).mean() < 0.4


def test_save_demo_as_image_folder_writes_split_class_tree_with_the_lazy_images(tmp_path):
    written = save_demo_as_image_folder(tmp_path, per_class=2, img_size=32, seed=1,
                                        splits=("train", "test"))
    assert written == {"train": 14, "test": 14}
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted(DEMO_CLASSES)
    assert len(list((tmp_path / "test").rglob("*.png"))) == 14
    lazy = build_demo_dataset(_demo_cfg(img_size=32, split_seed=1, demo_train_per_class=2), "train")
    on_disk = np.asarray(Image.open(tmp_path / "train" / "sad" / "000002.png"))
    assert lazy.targets[2] == DEMO_CLASSES.index("sad")
    assert np.array_equal(on_disk, np.asarray(lazy.load_image(2)))


# --------------------------------------------------------------------------------------------------
# Label noise
# --------------------------------------------------------------------------------------------------
TARGETS = np.repeat(np.arange(7), [300, 120, 200, 80, 150, 50, 100])  # 1000 imbalanced labels


def test_no_noise_leaves_labels_unchanged():
    noisy, changed = inject_label_noise(TARGETS, 7, NoiseConfig(type="none", rate=0.3))
    assert np.array_equal(noisy, TARGETS) and not changed.any()


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3])
def test_symmetric_noise_flips_exactly_the_rate_to_other_classes_uniformly(rate):
    noisy, changed = inject_label_noise(TARGETS, 7, NoiseConfig(type="symmetric", rate=rate, seed=1))
    assert changed.sum() == round(rate * len(TARGETS))
    assert np.array_equal(changed, noisy != TARGETS)  # a flipped label is never the same class
    assert noisy.min() >= 0 and noisy.max() < 7


def test_symmetric_noise_target_classes_are_uniform_over_the_others():
    targets = np.zeros(60000, dtype=np.int64)
    noisy, changed = inject_label_noise(targets, 7, NoiseConfig(type="symmetric", rate=0.5, seed=0))
    share = np.bincount(noisy[changed], minlength=7) / changed.sum()
    assert share[0] == 0 and np.allclose(share[1:], 1 / 6, atol=0.01)


def test_asymmetric_noise_flips_the_rate_of_each_class_to_its_confusable_class():
    noisy, changed = inject_label_noise(TARGETS, 7, NoiseConfig(type="asymmetric", rate=0.2, seed=0))
    counts = np.bincount(TARGETS)
    for c in range(7):
        flipped = changed & (TARGETS == c)
        assert flipped.sum() == round(0.2 * counts[c])
        assert (noisy[flipped] == (c + 1) % 7).all()  # the default pair map c -> c + 1
    confusable = DATASET_SPECS["demo"].confusable_targets()
    noisy, changed = inject_label_noise(TARGETS, 7, NoiseConfig(type="asymmetric", rate=0.3),
                                        confusable=confusable)
    assert (noisy[changed] == confusable[TARGETS[changed]]).all()
    assert changed.sum() == sum(round(0.3 * n) for n in counts)
    # A partial map flips only the classes it names.
    noisy, changed = inject_label_noise(TARGETS, 7, NoiseConfig(type="asymmetric", rate=0.4),
                                        confusable={6: 3})
    assert set(TARGETS[changed]) == {6} and (noisy[changed] == 3).all() and changed.sum() == 40
    with pytest.raises(ValueError, match="two different"):
        inject_label_noise(TARGETS, 7, NoiseConfig(type="asymmetric", rate=0.1), confusable={2: 2})


def test_annotator_noise_matches_the_expected_disagreement_of_the_votes():
    rng = np.random.default_rng(0)
    n = 20000
    votes = rng.multinomial(10, [0.55, 0.2, 0.1, 0.05, 0.05, 0.03, 0.02], size=n).astype(np.float32)
    majority = votes.argmax(axis=1)
    noisy, changed = inject_label_noise(majority, 7, NoiseConfig(type="annotator", rate=0.0, seed=3),
                                        votes=votes)
    # Probability that a tagger drawn by vote share disagrees with the majority.
    expected = 1.0 - (votes[np.arange(n), majority] / votes.sum(axis=1)).mean()
    assert abs(changed.mean() - expected) < 0.01
    assert (votes[np.arange(n), noisy] > 0).all()  # only classes someone voted for
    with pytest.raises(ValueError, match="annotator vote counts"):
        inject_label_noise(majority, 7, NoiseConfig(type="annotator"))


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_noise_is_reproducible_for_a_seed_and_changes_with_it(kind):
    a, _ = inject_label_noise(TARGETS, 7, NoiseConfig(type=kind, rate=0.3, seed=5))
    b, _ = inject_label_noise(TARGETS, 7, NoiseConfig(type=kind, rate=0.3, seed=5))
    c, _ = inject_label_noise(TARGETS, 7, NoiseConfig(type=kind, rate=0.3, seed=6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_noisy_labels_round_trip_through_an_npz(tmp_path):
    noisy, changed = inject_label_noise(TARGETS, 7, NoiseConfig(type="symmetric", rate=0.2))
    path = tmp_path / "noise" / "labels.npz"
    save_noisy_labels(path, noisy, TARGETS, changed)
    loaded = load_noisy_labels(path)
    assert all(np.array_equal(x, y) for x, y in zip(loaded, (noisy, TARGETS, changed)))
    assert loaded[2].dtype == bool


# --------------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------------
def test_mrr_balances_every_class_to_the_largest_and_keeps_every_original_sample():
    sampler = MinimalRandomResampler(TARGETS, seed=0)
    indices = np.array(list(sampler))
    assert len(indices) == len(sampler) == 7 * 300
    assert np.bincount(TARGETS[indices]).tolist() == [300] * 7
    assert set(indices.tolist()) == set(range(len(TARGETS)))
    # Duplicates are spread evenly: class 5 (50 images -> 300 draws) repeats each image 6 times.
    assert (np.bincount(indices, minlength=len(TARGETS))[TARGETS == 5] == 6).all()
    # Class 4 (150 -> 300): each image exactly twice; class 1 (120 -> 300): twice or three times.
    assert set(np.bincount(indices, minlength=len(TARGETS))[TARGETS == 1].tolist()) == {2, 3}


def test_class_balanced_sampler_draws_classes_uniformly():
    sampler = ClassBalancedSampler(TARGETS, seed=0, num_samples=70000)
    share = np.bincount(TARGETS[np.array(list(sampler))], minlength=7) / 70000
    assert np.allclose(share, 1 / 7, atol=0.01)
    assert len(ClassBalancedSampler(TARGETS, seed=0)) == len(TARGETS)


@pytest.mark.parametrize("name", ["random", "mrr", "class_balanced"])
def test_samplers_are_a_function_of_seed_and_epoch(name):
    a, b = build_sampler(name, TARGETS, seed=1), build_sampler(name, TARGETS, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    epoch3 = list(a)
    assert epoch3 == list(b) == list(a)  # replaying an epoch gives the same order
    a.set_epoch(4)
    assert list(a) != epoch3
    other_seed = build_sampler(name, TARGETS, seed=2)
    other_seed.set_epoch(3)
    assert list(other_seed) != epoch3


def test_random_sampler_visits_every_index_once():
    sampler = build_sampler("random", TARGETS, seed=0)
    assert isinstance(sampler, EpochShuffleSampler)
    assert sorted(sampler) == list(range(len(TARGETS)))
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("weighted", TARGETS, 0)


# --------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [48, 112])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("train", [True, False])
def test_transform_gives_normalised_3_channel_tensor_of_img_size(size, mode, train):
    cfg = DataConfig(img_size=size, augment=AugmentConfig(random_erasing=0.5))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 60, 3), dtype=np.uint8)
                          ).convert(mode)
    out = build_transform(cfg, train=train)(img)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert -2.2 < out.min() and out.max() < 2.7  # ImageNet-normalised range


def test_eval_transform_is_deterministic_and_denormalize_recovers_pixels():
    cfg = DataConfig(img_size=32)
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    transform = build_transform(cfg, train=False)
    x = transform(Image.fromarray(pixels))
    assert torch.equal(x, transform(Image.fromarray(pixels)))
    assert np.abs(denormalize(x).astype(int) - pixels).max() <= 1
    batch = denormalize(torch.stack([x, x]))
    assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.uint8


def test_samplers_shard_across_processes_under_accelerate_and_follow_the_loader_epoch():
    # Two simulated processes: each iterates the whole sampler and keeps its slice of each batch,
    # so together they cover the epoch's order, and loader.set_epoch selects the epoch to replay.
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader, TensorDataset

    targets = TARGETS[::10]  # 100 labels
    dataset = TensorDataset(torch.arange(len(targets)))
    expected = MinimalRandomResampler(targets, seed=0)
    expected.set_epoch(2)
    order = expected.indices_for_epoch().tolist()  # 7 * 30 = 210 indices
    seen = []
    for rank in (0, 1):
        loader = DataLoader(dataset, batch_size=5, sampler=MinimalRandomResampler(targets, seed=0))
        shard = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False,
                                    rng_types=[])
        shard.set_epoch(2)
        seen.append([int(i) for (batch,) in shard for i in batch])
    assert len(seen[0]) == len(seen[1]) == 105
    interleaved = [i for k in range(0, 105, 5) for i in seen[0][k:k + 5] + seen[1][k:k + 5]]
    assert interleaved == order
