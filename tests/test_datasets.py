"""Benchmark readers: each fixture is written in the benchmark's real on-disk format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_robust.config import DataConfig
from fer_robust.data.affectnet import read_affectnet
from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS, confusable_targets
from fer_robust.data.fer2013 import read_fer2013
from fer_robust.data.ferplus import majority_vote, read_ferplus
from fer_robust.data.image_folder import read_image_folder
from fer_robust.data.rafdb import read_rafdb
from fer_robust.data.registry import build_dataset, dataset_summary, format_summary
from fer_robust.data.sfew import read_sfew
from fer_robust.data.splits import stratified_split
from fer_robust.data._reading import SplitNotFoundError

from _benchmark_fixtures import (FERPLUS_ROWS, write_affectnet, write_fer2013, write_ferplus,
                                 write_image, write_rafdb, write_sfew)

REAL_FERPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"


# --------------------------------------------------------------------------------------------------
# Class order and confusable classes
# --------------------------------------------------------------------------------------------------
def test_benchmark_class_orders_follow_each_official_label_order():
    assert DATASET_SPECS["ferplus"].classes[:3] == ("neutral", "happiness", "surprise")
    assert DATASET_SPECS["rafdb"].classes[0] == "Surprise"
    assert DATASET_SPECS["rafdb"].classes[6] == "Neutral"
    assert DATASET_SPECS["affectnet8"].classes[7] == "Contempt"
    assert DATASET_SPECS["affectnet7"].classes == DATASET_SPECS["affectnet8"].classes[:7]
    assert DATASET_SPECS["fer2013"].classes[6] == "Neutral"
    assert DATASET_SPECS["sfew"].classes == ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad",
                                          "Surprise")


def test_confusable_map_resolves_by_emotion_name_in_each_benchmark_order():
    ferplus = DATASET_SPECS["ferplus"].confusable_targets()
    # neutral->sadness(3), happiness->surprise(2), surprise->fear(6), sadness->neutral(0),
    # anger->disgust(5), disgust->anger(4), fear->surprise(2), contempt->neutral(0)
    assert ferplus.tolist() == [3, 2, 6, 0, 5, 4, 2, 0]
    raf = DATASET_SPECS["rafdb"].confusable_targets()
    assert raf.tolist() == [1, 0, 5, 0, 6, 2, 4]
    with pytest.raises(ValueError, match="'cat'"):
        confusable_targets(["cat", "dog"])


# --------------------------------------------------------------------------------------------------
# Validation carve
# --------------------------------------------------------------------------------------------------
def test_stratified_split_is_disjoint_complete_stratified_and_seeded():
    targets = np.repeat(np.arange(4), [100, 50, 20, 1])
    train, val = stratified_split(targets, 0.2, seed=3)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(171))
    # 20% of each class; the single-sample class stays in train.
    assert np.bincount(targets[val], minlength=4).tolist() == [20, 10, 4, 0]
    again_train, again_val = stratified_split(targets, 0.2, seed=3)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    _, other_val = stratified_split(targets, 0.2, seed=4)
    assert not np.array_equal(val, other_val)


# --------------------------------------------------------------------------------------------------
# FERPlus
# --------------------------------------------------------------------------------------------------
def test_ferplus_majority_vote_drops_ties_unknown_and_zeroes_single_votes():
    votes = np.array([row[1] for row in FERPLUS_ROWS])
    keep, labels = majority_vote(votes)
    expected = [row[2] for row in FERPLUS_ROWS]
    assert keep.tolist() == [e is not None for e in expected]
    assert labels[keep].tolist() == [e for e in expected if e is not None]


def test_ferplus_reader_keeps_majority_rows_with_raw_votes(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    ds = read_ferplus(root, "train")
    assert (ds.name, ds.split, len(ds)) == ("ferplus", "train", 5)
    assert ds.targets.tolist() == [0, 1, 2, 7, 3]
    assert [Path(p).name for p in ds.paths] == ["fer0000000.png", "fer0000001.png", "fer0000006.png",
                                                "fer0000007.png", "fer0000008.png"]
    # Raw counts over the 8 emotions: the single votes of row 6 are kept in ``votes``.
    assert ds.votes.shape == (5, 8)
    assert ds.votes[2].tolist() == [1, 1, 5, 1, 1, 1, 0, 0]
    assert "dropped 4" in ds.notes[0]
    image, label, index = ds[2]
    assert image.mode == "RGB" and image.size == (48, 48) and (label, index) == (2, 2)


def test_ferplus_missing_test_folder_is_named(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    with pytest.raises(SplitNotFoundError, match="FER2013Test"):
        read_ferplus(root, "test")


def test_ferplus_missing_root_and_label_file_are_named(tmp_path):
    with pytest.raises(DatasetFormatError, match="nowhere"):
        read_ferplus(tmp_path / "nowhere", "train")
    (tmp_path / "ferplus" / "FER2013Train").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match=r"FER2013Train/label\.csv"):
        read_ferplus(tmp_path / "ferplus", "train")


def test_ferplus_malformed_row_names_file_and_line(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    label_file = root / "FER2013Train" / "label.csv"
    lines = label_file.read_text().splitlines()
    lines[3] = lines[3].replace(",0,0,0,0,0", ",x,0,0,0,0", 1)
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"label\.csv:4: vote counts must be integers"):
        read_ferplus(root, "train")
    lines[3] = "fer0000003.png,(0 0 48 48),1,2"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"label\.csv:4: expected 12 columns"):
        read_ferplus(root, "train")


def test_missing_image_is_an_error_naming_it_or_skipped_with_a_warning(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    (root / "FER2013Train" / "fer0000007.png").unlink()
    (root / "FER2013Train" / "fer0000001.png").write_bytes(b"")  # empty file: unreadable too
    with pytest.raises(DatasetFormatError, match=r"fer0000001\.png \(and 1 more\)"):
        read_ferplus(root, "train")
    with pytest.warns(UserWarning, match=r"skipping 2 missing or empty .*fer0000007\.png"):
        ds = read_ferplus(root, "train", skip_unreadable=True)
    assert ds.targets.tolist() == [0, 2, 3]
    assert ds.votes.shape == (3, 8) and ds.votes[1, 2] == 5
    assert any("skipped 2" in note for note in ds.notes)


def test_split_that_loses_every_row_is_an_error(tmp_path):
    rows = [("fer0000003.png", [5, 0, 5, 0, 0, 0, 0, 0, 0, 0], None)]
    root = write_ferplus(tmp_path / "ferplus", "FER2013Valid", rows)
    with pytest.raises(DatasetFormatError, match="ferplus val: the split is empty"):
        read_ferplus(root, "val")


# --------------------------------------------------------------------------------------------------
# RAF-DB
# --------------------------------------------------------------------------------------------------
def test_rafdb_maps_labels_one_to_seven_onto_ids_and_carves_val(tmp_path):
    root = write_rafdb(tmp_path / "basic")
    test = read_rafdb(root, "test")
    assert test.targets.tolist() == [0, 3, 3, 6, 2]
    assert test.classes[test.targets[0]] == "Surprise"
    assert test.paths[0].endswith("Image/aligned/test_0001_aligned.jpg")

    train = read_rafdb(root, "train", val_fraction=0.25, split_seed=1)
    val = read_rafdb(root, "val", val_fraction=0.25, split_seed=1)
    assert len(train) + len(val) == 48
    assert not set(train.paths) & set(val.paths)
    # round(0.25 * n) per class for n = 6, 4, 5, 12, 7, 5, 9
    assert val.class_counts().tolist() == [2, 1, 1, 3, 2, 1, 2]
    assert read_rafdb(root, "val", val_fraction=0.25, split_seed=1).paths == val.paths
    assert read_rafdb(root, "val", val_fraction=0.25, split_seed=2).paths != val.paths


def test_rafdb_unknown_class_id_names_file_line_and_value(tmp_path):
    root = write_rafdb(tmp_path / "basic")
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    lines = label_file.read_text().splitlines()
    lines[4] = "train_00005.jpg 8"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"list_patition_label\.txt:5: unknown class id 8"):
        read_rafdb(root, "train")
    lines[4] = "train_00005.jpg"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"list_patition_label\.txt:5: expected"):
        read_rafdb(root, "train")


def test_rafdb_missing_label_file_names_the_expected_path(tmp_path):
    (tmp_path / "basic").mkdir()
    with pytest.raises(DatasetFormatError, match=r"EmoLabel/list_patition_label\.txt"):
        read_rafdb(tmp_path / "basic", "test")


# --------------------------------------------------------------------------------------------------
# AffectNet
# --------------------------------------------------------------------------------------------------
def test_affectnet_drops_8_to_10_and_contempt_for_the_7_class_variant(tmp_path):
    train_labels = [0, 1, 2, 3, 4, 5, 6, 7] * 5 + [8, 9, 10, 10]
    val_labels = [0, 7, 8, 1, 6, 10]
    root = write_affectnet(tmp_path / "affectnet", train_labels, val_labels)

    test8 = read_affectnet(root, "test", num_classes=8)
    assert (test8.name, len(test8)) == ("affectnet8", 4)
    assert test8.targets.tolist() == [0, 7, 1, 6]
    assert "dropped 2 rows with expression 8-10" in test8.notes[0]

    test7 = read_affectnet(root, "test", num_classes=7)
    assert test7.targets.tolist() == [0, 1, 6]
    assert "dropped 1 Contempt" in test7.notes[1]

    train7 = read_affectnet(root, "train", num_classes=7, val_fraction=0.2, split_seed=0)
    val7 = read_affectnet(root, "val", num_classes=7, val_fraction=0.2, split_seed=0)
    assert len(train7) + len(val7) == 35 and val7.class_counts().tolist() == [1] * 7
    assert not set(train7.paths) & set(val7.paths)


def test_affectnet_crop_face_crops_to_the_face_box(tmp_path):
    root = write_affectnet(tmp_path / "affectnet", [0, 1, 2], [3, 4])
    full = read_affectnet(root, "test")
    cropped = read_affectnet(root, "test", crop_face=True)
    assert full[0][0].size == (16, 16)
    assert cropped[0][0].size == (8, 6)  # face_width, face_height


def test_affectnet_bad_expression_and_header_name_file_and_line(tmp_path):
    root = write_affectnet(tmp_path / "affectnet", [0, 1, 2], [3, 4])
    lines = (root / "validation.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",4,0.1", ",11,0.1")
    (root / "validation.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"validation\.csv:3: unknown class id 11"):
        read_affectnet(root, "test")
    lines[0] = "path,x,y,w,h,landmarks,label"
    (root / "validation.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"validation\.csv:1: header lacks"):
        read_affectnet(root, "test")


# --------------------------------------------------------------------------------------------------
# SFEW and image folders
# --------------------------------------------------------------------------------------------------
def test_sfew_val_folder_serves_as_test_and_val_is_carved_from_train(tmp_path):
    root = write_sfew(tmp_path / "sfew")
    test = read_sfew(root, "test")
    assert len(test) == 15 and test.class_counts().tolist() == [2, 2, 2, 3, 2, 2, 2]
    train = read_sfew(root, "train", val_fraction=0.25)
    val = read_sfew(root, "val", val_fraction=0.25)
    assert len(train) + len(val) == 29
    assert val.class_counts().tolist() == [1] * 7
    assert all("/Train/" in p for p in val.paths)


def test_sfew_unknown_class_folder_is_named(tmp_path):
    root = write_sfew(tmp_path / "sfew")
    (root / "Val" / "Contempt").mkdir()
    with pytest.raises(DatasetFormatError, match=r"Val/Contempt"):
        read_sfew(root, "test")


def test_image_folder_sorts_classes_carves_missing_val_and_notes_stray_files(tmp_path):
    root = tmp_path / "faces"
    for split, n in (("train", 10), ("test", 2)):
        for cls in ("sad", "happy", "neutral"):
            for i in range(n):
                write_image(root / split / cls / f"{i}.png", mode="RGB")
    (root / "train" / "happy" / "readme.txt").write_text("not an image")
    train = read_image_folder(root, "train", val_fraction=0.2)
    val = read_image_folder(root, "val", val_fraction=0.2)
    assert train.classes == ["happy", "neutral", "sad"]
    assert (len(train), len(val)) == (24, 6)
    assert any("1 non-image file" in n for n in train.notes)
    explicit = read_image_folder(root, "test", classes=["neutral", "happy", "sad"])
    assert explicit.classes == ["neutral", "happy", "sad"]
    assert [Path(p).parent.name for p in explicit.paths] == ["neutral"] * 2 + ["happy"] * 2 + ["sad"] * 2
    assert explicit.targets.tolist() == [0, 0, 1, 1, 2, 2]


# --------------------------------------------------------------------------------------------------
# FER2013
# --------------------------------------------------------------------------------------------------
def test_fer2013_reads_pixels_into_memory_with_standard_and_carved_splits(tmp_path):
    root = write_fer2013(tmp_path / "fer2013")
    test = read_fer2013(root, "test")
    assert test.targets.tolist() == [0, 5]
    assert test.paths == ["fer2013.csv:32", "fer2013.csv:33"]
    image, label, _ = test[0]
    assert image.mode == "RGB" and image.size == (48, 48) and image.getpixel((5, 5)) == (200,) * 3
    assert read_fer2013(root, "val").targets.tolist() == [3, 6]
    assert len(read_fer2013(root, "train")) == 28
    carved_val = read_fer2013(root, "val", val_source="carve", val_fraction=0.25)
    carved_train = read_fer2013(root, "train", val_source="carve", val_fraction=0.25)
    assert len(carved_val) == 7 and len(carved_train) == 21
    assert not set(carved_val.paths) & set(carved_train.paths)


def test_fer2013_short_pixel_row_names_file_and_line(tmp_path):
    root = write_fer2013(tmp_path / "fer2013")
    lines = (root / "fer2013.csv").read_text().splitlines()
    lines[5] = "3,1 2 3,Training"
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"fer2013\.csv:6: expected 2304 pixel values"):
        read_fer2013(root, "train")


# --------------------------------------------------------------------------------------------------
# Registry and summary
# --------------------------------------------------------------------------------------------------
def test_build_dataset_dispatches_caches_and_sets_transform(tmp_path):
    root = write_rafdb(tmp_path / "basic")
    cfg = DataConfig(name="rafdb", root=str(root), val_fraction=0.25, split_seed=1,
                     cache_in_memory=True)
    ds = build_dataset(cfg, "val", transform=lambda img: np.asarray(img).shape)
    assert len(ds) == 12 and ds._cache is not None
    assert ds[0][0] == (10, 12, 3)


def test_dataset_summary_counts_per_split_and_notes_absent_split(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    write_ferplus(root, "FER2013Valid", FERPLUS_ROWS[:2])
    summary = dataset_summary(DataConfig(name="ferplus", root=str(root)))
    assert summary["splits"]["train"]["per_class"]["contempt"] == 1
    assert summary["splits"]["val"]["total"] == 2
    assert "FER2013Test" in summary["splits"]["test"]["absent"]
    table = format_summary(summary)
    assert "test split absent" in table and "sadness" in table


def test_data_summary_cli_prints_table(tmp_path, capsys):
    from fer_robust.cli.data_summary import main
    root = write_sfew(tmp_path / "sfew")
    summary = main(["--dataset", "sfew", "--root", str(root), "--val-fraction", "0.25"])
    out = capsys.readouterr().out
    assert "Happy" in out and "22" in out  # 29 train images minus 7 carved
    assert summary["splits"]["train"]["total"] == 22
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "sfew", "--root", str(tmp_path / "missing")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("data_summary: error: SFEW root: expected folder")


# --------------------------------------------------------------------------------------------------
# The real FERPlus, when it sits beside the repository
# --------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_FERPLUS.is_dir(), reason=f"real FERPlus not found at {REAL_FERPLUS}")
def test_real_ferplus_has_protocol_counts():
    train = read_ferplus(REAL_FERPLUS, "train")
    val = read_ferplus(REAL_FERPLUS, "val")
    assert (len(train), len(val)) == (25045, 3191)
    assert train.class_counts().tolist() == [8733, 7284, 3136, 3022, 2098, 116, 536, 120]
    assert train.votes.shape == (25045, 8)
    assert np.array_equal(train.votes.argmax(1), train.targets)
    image, label, index = train[0]
    assert image.size == (48, 48) and image.mode == "RGB"


# --------------------------------------------------------------------------------------------------
# Failure modes: corrupt images found up front, bit depth, label-file mistakes
# --------------------------------------------------------------------------------------------------
def truncate_jpeg(path: Path) -> None:
    """Overwrite ``path`` with the first half of a noisy JPEG: it opens, and fails when decoded."""
    from PIL import Image
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_data_summary_verify_lists_undecodable_images_and_exits_2(tmp_path, capsys):
    from fer_robust.cli.data_summary import main
    root = write_rafdb(tmp_path / "rafdb")
    broken = root / "Image" / "aligned" / "train_00003_aligned.jpg"
    truncate_jpeg(broken)
    assert main(["--dataset", "rafdb", "--root", str(root)])["splits"]["train"]["total"] > 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "rafdb", "--root", str(root), "--verify"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2
    assert f"{broken}: image file is truncated" in out
    assert err.strip().splitlines() == ["data_summary: error: 1 image(s) cannot be decoded (listed "
                                        "above); replace or remove them, or pass --skip-unreadable "
                                        "(data.skip_unreadable=true in training)"]
    counted = main(["--dataset", "rafdb", "--root", str(root), "--verify", "--skip-unreadable"])
    everything = dataset_summary(DataConfig(name="rafdb", root=str(root)))
    total = sum(counted["splits"][s]["total"] for s in ("train", "val"))
    assert total == sum(everything["splits"][s]["total"] for s in ("train", "val")) - 1


def test_build_dataset_decodes_small_splits_up_front_and_honours_skip_unreadable(tmp_path):
    root = write_rafdb(tmp_path / "rafdb")
    broken = root / "Image" / "aligned" / "test_0002_aligned.jpg"
    truncate_jpeg(broken)
    with pytest.raises(DatasetFormatError, match=rf"rafdb test: 1 image\(s\) cannot be decoded: "
                                                 rf"{broken} \(image file is truncated"):
        build_dataset(DataConfig(name="rafdb", root=str(root)), "test")
    with pytest.warns(UserWarning, match="skipping 1 image"):
        kept = build_dataset(DataConfig(name="rafdb", root=str(root), skip_unreadable=True), "test")
    assert len(kept) == 4 and str(broken) not in kept.paths
    assert "cannot be decoded" in kept.notes[-1]
    # data.verify_images=no leaves the check to the loader: one error naming the file.
    unchecked = build_dataset(DataConfig(name="rafdb", root=str(root), verify_images="no"), "test")
    with pytest.raises(DatasetFormatError, match=rf"cannot read image {broken}: image file is "
                                                 "truncated"):
        [unchecked[i] for i in range(len(unchecked))]


def test_16_bit_png_is_scaled_by_bit_depth_not_saturated(tmp_path):
    from PIL import Image
    face = np.random.default_rng(0).integers(0, 256, (20, 20)).astype(np.uint8)
    Image.fromarray(face).save(tmp_path / "face8.png")
    Image.fromarray(face.astype(np.uint16) * 257).save(tmp_path / "face16.png")
    assert Image.open(tmp_path / "face16.png").mode == "I;16"
    ds = FERDataset(["a"], [0, 0], [str(tmp_path / "face8.png"), str(tmp_path / "face16.png")])
    eight, sixteen = (np.asarray(ds.load_image(i)) for i in range(2))
    assert sixteen.shape == (20, 20, 3)
    assert np.array_equal(eight, sixteen) and abs(sixteen.mean() - face.mean()) < 1e-9


def test_empty_class_folder_in_training_folder_is_refused(tmp_path):
    for cls in ("angry", "happy"):
        write_image(tmp_path / "train" / cls / "a.png")
        write_image(tmp_path / "train" / cls / "b.png")
    (tmp_path / "train" / "fear").mkdir()
    with pytest.raises(DatasetFormatError, match=r"folder train: class folder\(s\) \[.*fear'\] "
                                                 "hold no images"):
        read_image_folder(tmp_path, "train")
    root = write_sfew(tmp_path / "sfew")
    for f in (root / "Train" / "Fear").iterdir():
        f.unlink()
    with pytest.raises(DatasetFormatError, match=r"SFEW train: class folder\(s\) .*Fear"):
        read_sfew(root, "train")
    assert len(read_sfew(root, "test")) > 0  # the test split may lack a class


def test_fractional_ferplus_votes_are_refused(tmp_path):
    rows = [("fer0000000.png", [7.5, 2.5, 0, 0, 0, 0, 0, 0, 0, 0], 0)]
    root = write_ferplus(tmp_path / "ferplus", rows=rows)
    with pytest.raises(DatasetFormatError, match=r"label.csv:1: vote counts must be whole numbers"):
        read_ferplus(root, "train")
    whole = [("fer0000000.png", [7.0, 3, 0, 0, 0, 0, 0, 0, 0, 0], 0)]  # "7.0" is a count
    assert len(read_ferplus(write_ferplus(tmp_path / "whole", rows=whole), "train")) == 1


def test_duplicate_label_rows_are_refused_naming_both_lines(tmp_path):
    root = write_ferplus(tmp_path / "ferplus", rows=FERPLUS_ROWS + FERPLUS_ROWS[1:2])
    with pytest.raises(DatasetFormatError, match=r"label.csv:10: fer0000001.png is listed again "
                                                 r"\(first at line 2\)"):
        read_ferplus(root, "train")
    raf = write_rafdb(tmp_path / "rafdb")
    label_file = raf / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00001.jpg 1\n")
    with pytest.raises(DatasetFormatError, match=r"train_00001.jpg is listed again \(first at "
                                                 r"line 1\)"):
        read_rafdb(raf, "train")
    affectnet = write_affectnet(tmp_path / "affectnet", [0, 1, 2], [0])
    csv_file = affectnet / "training.csv"
    csv_file.write_text(csv_file.read_text() + csv_file.read_text().splitlines()[1] + "\n")
    with pytest.raises(DatasetFormatError, match=r"training.csv:5: .* is listed again"):
        read_affectnet(affectnet, "train")


def test_fer2013_pixel_out_of_range_message_says_which_value(tmp_path):
    from _benchmark_fixtures import fer2013_row
    root = write_fer2013(tmp_path / "fer2013")
    csv_file = root / "fer2013.csv"
    bad = fer2013_row(0, "Training").split(",")
    bad[1] = bad[1].replace("7", "300", 1)
    csv_file.write_text(csv_file.read_text() + ",".join(bad) + "\n")
    with pytest.raises(DatasetFormatError, match=r"fer2013.csv:34: pixel values must be in 0..255, "
                                                 r"got 300 at position 0"):
        read_fer2013(root, "train")
