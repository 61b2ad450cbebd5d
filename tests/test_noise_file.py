"""Noise read from a file (``data.noise.type=file``) and the peers' FERPlus protocol (``ferplus7``).

The RAF-DB fixture's noise file is written in the published files' exact layout (RUL's and EAC's
``raf-basic/EmoLabel/noise01.txt``): the training rows only, in the clean list's order,
``train_00001.jpg 5`` with labels 1-7, ``\\n`` between rows and none after the last.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fer_robust.config import ConfigError, DataConfig, NoiseConfig
from fer_robust.data.base import DatasetFormatError
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data import noise_file
from fer_robust.data.noise_file import noisy_targets_from_file, read_noise_file
from fer_robust.data.registry import build_dataset
from fer_robust.data.rafdb import RAFDB_LABEL_FILE

from _benchmark_fixtures import FERPLUS_ROWS, write_ferplus, write_rafdb

NOISE01 = "EmoLabel/noise01.txt"


def write_published_noise(root: Path, every: int = 5, name: str = NOISE01) -> dict[str, int]:
    """Flip the label of every ``every``-th training row to the next class, as a published file
    does; returns ``{image: noisy 1-based label}``."""
    rows = [line.split() for line in (root / RAFDB_LABEL_FILE).read_text().split("\n") if line]
    noisy = {}
    for i, (image, label) in enumerate(r for r in rows if r[0].startswith("train_")):
        noisy[image] = int(label) % 7 + 1 if i % every == 0 else int(label)
    (root / name).write_text("\n".join(f"{k} {v}" for k, v in noisy.items()))  # no final newline
    return noisy


def rafdb_cfg(root: Path, file: str = NOISE01, **kwargs) -> DataConfig:
    kwargs.setdefault("protocol", "full_train")
    return DataConfig(name="rafdb", root=str(root), noise=NoiseConfig(type="file", file=file),
                      **kwargs)


@pytest.fixture
def raf(tmp_path) -> Path:
    return write_rafdb(tmp_path / "raf-basic")


def test_published_rafdb_noise_file_gives_each_training_image_its_label(raf):
    noisy = write_published_noise(raf)
    train = build_dataset(rafdb_cfg(raf), "train")
    labels, source = noisy_targets_from_file(rafdb_cfg(raf), train)
    expected = [noisy[Path(p).name.replace("_aligned", "")] - 1 for p in train.paths]
    assert labels.tolist() == expected and len(labels) == 48
    # Every 5th of the 48 rows flipped: 10 changed labels, each to another class.
    assert int((labels != train.clean_targets).sum()) == 10
    assert source.sha256 == hashlib.sha256((raf / NOISE01).read_bytes()).hexdigest()
    assert source.path == (raf / NOISE01).resolve()


def test_a_carved_training_split_takes_the_file_labels_of_its_own_images(raf):
    noisy = write_published_noise(raf)
    cfg = rafdb_cfg(raf, protocol="validation", val_fraction=0.25, split_seed=1)
    train = build_dataset(cfg, "train")
    labels, _ = noisy_targets_from_file(cfg, train)
    assert len(train) < 48
    assert labels.tolist() == [noisy[Path(p).name.replace("_aligned", "")] - 1
                               for p in train.paths]


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:-1], r"noise01\.txt: 1 of the 48 training images .* are missing, first "
                             r"train_00048\.jpg; the file has 47 rows"),
    (lambda rows: rows + ["train_09999.jpg 3"],
     r"noise01\.txt:49: train_09999\.jpg is not in the clean training list"),
    (lambda rows: rows + ["test_0001.jpg 1"],
     r"noise01\.txt:49: test_0001\.jpg is a test image: a noise file lists the training images"),
    (lambda rows: rows[:4] + ["train_00005.jpg 8"] + rows[5:],
     r"noise01\.txt:5: unknown class id 8 \(RAF-DB basic labels are 1\.\.7"),
    (lambda rows: rows[:4] + ["train_00005.jpg five"] + rows[5:],
     r"noise01\.txt:5: label 'five' is not an integer"),
    (lambda rows: rows[:5] + [rows[2]] + rows[6:],
     r"noise01\.txt:6: train_00003\.jpg is listed again \(first at line 3\)"),
    (lambda rows: rows[:1] + ["train_00002.jpg 4 extra"] + rows[2:],
     r"noise01\.txt:2: expected '<image> <label>'"),
    # SCN's files: absolute paths of the authors' machine and labels 0-6.
    (lambda rows: ["/home/kai/RAFDB/aligned/train_00001_aligned.jpg 4"] + rows[1:],
     r"noise01\.txt:1: image path '/home/kai/RAFDB/aligned/train_00001_aligned\.jpg' leaves"),
    (lambda rows: ["../train_00001.jpg 4"] + rows[1:],
     r"noise01\.txt:1: image path '\.\./train_00001\.jpg' leaves the dataset folder"),
    (lambda rows: ["aligned_00001.jpg 4"] + rows[1:],
     r"noise01\.txt:1: image name 'aligned_00001\.jpg' starts with neither 'train_' nor"),
])
def test_a_noise_file_that_does_not_match_the_clean_list_is_one_line_naming_file_and_line(
        raf, edit, message):
    write_published_noise(raf)
    rows = (raf / NOISE01).read_text().split("\n")
    (raf / NOISE01).write_text("\n".join(edit(rows)) + "\n")
    with pytest.raises(DatasetFormatError, match=message) as error:
        read_noise_file(rafdb_cfg(raf), 7)
    assert "\n" not in str(error.value)


def test_the_noise_file_path_stays_under_the_root_and_the_file_is_bounded(raf, tmp_path,
                                                                        monkeypatch):
    write_published_noise(raf)
    (tmp_path / "outside.txt").write_text((raf / NOISE01).read_text())
    with pytest.raises(ConfigError, match=r"'data\.noise\.file': \.\./outside\.txt leads out of "
                                          r"data\.root"):
        read_noise_file(rafdb_cfg(raf, file="../outside.txt"), 7)
    (raf / "EmoLabel" / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ConfigError, match="leads out of data.root"):
        read_noise_file(rafdb_cfg(raf, file="EmoLabel/link.txt"), 7)
    # An absolute path is the user's own choice.
    assert len(read_noise_file(rafdb_cfg(raf, file=str(tmp_path / "outside.txt")), 7).labels) == 48
    with pytest.raises(ConfigError, match="not a file"):
        read_noise_file(rafdb_cfg(raf, file="EmoLabel"), 7)
    with pytest.raises(ConfigError, match=r"needs data\.noise\.file"):
        read_noise_file(rafdb_cfg(raf, file=""), 7)
    monkeypatch.setattr(noise_file, "MAX_NOISE_FILE_BYTES", 100)
    with pytest.raises(DatasetFormatError, match=r"noise01\.txt: 8\d\d bytes; a label list is "):
        read_noise_file(rafdb_cfg(raf), 7)


def test_a_binary_file_is_refused_as_not_text(raf):
    (raf / NOISE01).write_bytes(b"train_00001.jpg \xff\xfe\n")
    with pytest.raises(DatasetFormatError, match="not a UTF-8 text file"):
        read_noise_file(rafdb_cfg(raf), 7)


def test_datasets_without_a_list_format_refuse_file_noise(tmp_path):
    cfg = DataConfig(name="sfew", root=str(tmp_path), noise=NoiseConfig(type="file", file="x"))
    with pytest.raises(ConfigError, match=r"no label-list format for dataset 'sfew'; known: "
                                          r"\['ferplus', 'ferplus7', 'rafdb'\]"):
        read_noise_file(cfg, 7)


# --------------------------------------------------------------------------------------------------
# FERPlus: a CSV of names and class ids; ferplus7
# --------------------------------------------------------------------------------------------------
def test_ferplus7_drops_contempt_images_and_keeps_every_other_label(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    eight = build_dataset(DataConfig(name="ferplus", root=str(root)), "train")
    seven = build_dataset(DataConfig(name="ferplus7", root=str(root)), "train")
    assert seven.classes == list(DATASET_SPECS["ferplus"].classes[:7]) == \
        list(DATASET_SPECS["ferplus7"].classes)
    kept = [(name, label) for name, _, label in FERPLUS_ROWS if label is not None and label != 7]
    assert [Path(p).name for p in seven.paths] == [name for name, _ in kept]
    assert seven.targets.tolist() == [label for _, label in kept]
    # Every image ferplus7 keeps has the label it has under ferplus.
    by_name = dict(zip((Path(p).name for p in eight.paths), eight.targets.tolist()))
    assert all(by_name[name] == label for name, label in kept)
    assert seven.votes.shape == (len(kept), 7)
    assert any("dropped 1 contempt images (ferplus7)" in n for n in seven.notes)


REAL_FERPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"


@pytest.mark.skipif(not (REAL_FERPLUS / "FER2013Train").is_dir(),
                    reason=f"real FERPlus not found at {REAL_FERPLUS}")
def test_real_ferplus7_drops_the_120_train_and_16_val_contempt_images():
    from fer_robust.data.ferplus import read_ferplus
    for split, expected in DATASET_SPECS["ferplus7"].expected_counts.items():
        seven = read_ferplus(REAL_FERPLUS, split, num_classes=7)
        eight = read_ferplus(REAL_FERPLUS, split)
        assert len(seven) == expected == len(eight) - int((eight.targets == 7).sum())


def test_ferplus_noise_csv_gives_its_labels_and_refuses_contempt_under_ferplus7(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    kept = [(name, label) for name, _, label in FERPLUS_ROWS if label is not None]
    (root / "noisy.csv").write_text("".join(f"{n},{(l + 1) % 8}\n" for n, l in kept))
    cfg = DataConfig(name="ferplus", root=str(root),
                     noise=NoiseConfig(type="file", file="noisy.csv"))
    train = build_dataset(cfg, "train")
    labels, _ = noisy_targets_from_file(cfg, train)
    assert labels.tolist() == [(label + 1) % 8 for _, label in kept]
    # Under ferplus7 the contempt image is not a training image, and 7 is not a class.
    cfg7 = DataConfig(name="ferplus7", root=str(root),
                      noise=NoiseConfig(type="file", file="noisy.csv"))
    (root / "noisy.csv").write_text("".join(f"{n},{l}\n" for n, l in kept))
    with pytest.raises(DatasetFormatError, match=r"noisy\.csv:4: unknown class id 7 \(this "
                                                 r"dataset's class ids are 0\.\.6\)"):
        read_noise_file(cfg7, 7)
    (root / "noisy.csv").write_text("".join(f"{n},{l % 7}\n" for n, l in kept))
    with pytest.raises(DatasetFormatError, match=r"noisy\.csv:4: fer0000007\.png is not in the "
                                                 r"clean training list"):
        read_noise_file(cfg7, 7)
    (root / "noisy.csv").write_text("fer0000000.png,0\n../FER2013Valid/fer0000001.png,1\n")
    with pytest.raises(DatasetFormatError, match=r"noisy\.csv:2: image path '\.\./FER2013Valid/"
                                                 r"fer0000001\.png' leaves the dataset folder"):
        read_noise_file(cfg7, 7)


# --------------------------------------------------------------------------------------------------
# A run on a noise file, and the protocol it prints and saves
# --------------------------------------------------------------------------------------------------
def test_a_run_on_the_published_noise_file_records_it_like_drawn_noise_and_prints_its_protocol(
        raf, tmp_path, capsys):
    import json

    import yaml

    from fer_robust.cli import train as train_cli

    noisy = write_published_noise(raf)
    run = tmp_path / "run"
    train_cli.main(["--config", str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"),
                    "data.name=rafdb", f"data.root={raf}", "data.protocol=full_train",
                    "data.noise.type=file", f"data.noise.file={NOISE01}", "data.img_size=32",
                    "model.backbone=test_resnet", "optim.batch_size=16", "stages.0.epochs=1",
                    "stages.1.epochs=1", "stages.2.epochs=0", "progress_bar=false",
                    f"output_dir={run}"])
    first = capsys.readouterr().out.splitlines()[0]
    digest = hashlib.sha256((raf / NOISE01).read_bytes()).hexdigest()
    assert first.startswith("protocol: dataset rafdb; classes 7 (Surprise, Fear, Disgust, ")
    assert ("train the whole training split (no validation carve); val none; test test_* rows; "
            "kept the last epoch, no selection (data.protocol=full_train); seeds seed 42, "
            "data.split_seed 0, data.noise.seed 0; noise file EmoLabel/noise01.txt (sha256 "
            f"{digest[:16]})") in first
    # config.yaml: the same choices as comments above the config, which still loads as it was.
    text = (run / "config.yaml").read_text()
    assert text.startswith("# The run's protocol") and f"#   noise: file {NOISE01}" in text
    assert yaml.safe_load(text)["data"]["noise"] == {"type": "file", "rate": 0.0, "seed": 0,
                                                      "file": NOISE01}
    # noisy_labels.npz as for drawn noise: the split is scored against the clean labels.
    saved = np.load(run / "noisy_labels.npz")
    assert int(saved["changed_mask"].sum()) == 10
    assert sorted(saved["noisy_targets"].tolist()) == sorted(v - 1 for v in noisy.values())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "split_f1" in records[-1] and "memorised_share" in records[-1]


def test_protocol_choices_name_ferplus7s_classes_splits_selection_and_seeds():
    from fer_robust.config import Config
    from fer_robust.engine.protocol import protocol_choices, protocol_comment, protocol_line

    cfg = Config()
    cfg.data.name, cfg.seed, cfg.data.noise = "ferplus7", 7, NoiseConfig("symmetric", 0.3, 5)
    choices = protocol_choices(cfg, DATASET_SPECS["ferplus7"].classes)
    assert choices == {
        "dataset": "ferplus7",
        "classes": "7 (neutral, happiness, surprise, sadness, anger, disgust, fear)",
        "train": "FER2013Train/ minus contempt", "val": "FER2013Valid/ minus contempt",
        "test": "FER2013Test/ minus contempt",
        "kept": "the best epoch by validation accuracy (data.protocol=validation)",
        "seeds": "seed 7, data.split_seed 0, data.noise.seed 5",
        "noise": "symmetric 0.3, drawn with seed 5"}
    assert protocol_line(choices).startswith("protocol: dataset ferplus7; classes 7 (neutral, ")
    assert protocol_comment(choices).count("\n#   ") == len(choices)
    cfg.data.name = "rafdb"
    assert protocol_choices(cfg, DATASET_SPECS["rafdb"].classes)["val"] == \
        "carved from train_* rows (0.1 of each class, split_seed 0)"
