"""Tiny datasets in each benchmark's real on-disk format, for reader and training tests."""
from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from fer_robust.data.dataset_facts import DATASET_SPECS

def write_image(path: Path, value: int = 128, size: tuple[int, int] = (12, 10), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


# --------------------------------------------------------------------------------------------------
# Fixtures in each benchmark's on-disk format
# --------------------------------------------------------------------------------------------------
# FERPlus vote rows: (name, 8 emotions + unknown + NF). Expected label, or None when dropped.
FERPLUS_ROWS = [
    ("fer0000000.png", [8, 1, 1, 0, 0, 0, 0, 0, 0, 0], 0),     # clear neutral
    ("fer0000001.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], 1),    # clear happiness
    ("fer0000002.png", [4, 0, 0, 0, 3, 2, 0, 0, 0, 0], None),  # top 4 of 9 votes: not a majority
    ("fer0000003.png", [5, 0, 5, 0, 0, 0, 0, 0, 0, 0], None),  # tie for the top
    ("fer0000004.png", [1, 0, 0, 0, 0, 0, 0, 0, 9, 0], None),  # top class unknown
    ("fer0000005.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8], None),  # top class NF
    # 5 surprise of 10 raw votes, but the 5 single votes are zeroed: 5 of 5 -> surprise.
    ("fer0000006.png", [1, 1, 5, 1, 1, 1, 0, 0, 0, 0], 2),
    ("fer0000007.png", [0, 0, 0, 0, 0, 0, 0, 6, 4, 0], 7),     # contempt
    ("fer0000008.png", [2, 0, 0, 7, 0, 0, 0, 0, 1, 0], 3),     # sadness
]


def write_ferplus(root: Path, folder: str = "FER2013Train", rows=FERPLUS_ROWS) -> Path:
    split_dir = root / folder
    split_dir.mkdir(parents=True, exist_ok=True)
    with open(split_dir / "label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        for name, votes, _ in rows:
            writer.writerow([name, "(0, 0, 48, 48)", *votes])
            write_image(split_dir / name, size=(48, 48))
    return root


RAF_CLASS_COUNTS = {1: 6, 2: 4, 3: 5, 4: 12, 5: 7, 6: 5, 7: 9}  # 48 train images


def write_rafdb(root: Path) -> Path:
    lines = []
    i = 0
    for label, n in RAF_CLASS_COUNTS.items():
        for _ in range(n):
            i += 1
            lines.append(f"train_{i:05d}.jpg {label}")
    for j, label in enumerate([1, 4, 4, 7, 3], start=1):
        lines.append(f"test_{j:04d}.jpg {label}")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        stem = line.split()[0][:-4]
        write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", mode="RGB")
    return root


AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")


def write_affectnet(root: Path, train_labels: list[int], val_labels: list[int]) -> Path:
    for csv_name, labels in (("training.csv", train_labels), ("validation.csv", val_labels)):
        rows = [AFFECTNET_HEADER]
        for i, label in enumerate(labels):
            rel = f"{i % 3 + 1}/{csv_name[:3]}_{i:04d}.jpg"
            rows.append(f'{rel},2,3,8,6,"1.0;2.0;3.0",{label},0.1,-0.2')
            write_image(root / "Manually_Annotated_Images" / rel, value=10 * (i % 20), size=(16, 16),
                         mode="RGB")
        (root / csv_name).write_text("\n".join(rows) + "\n")
    return root


def write_sfew(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    for source, per_class in (("Train", train_per_class), ("Val", val_per_class)):
        for k, cls in enumerate(DATASET_SPECS["sfew"].classes):
            for i in range(per_class + (k == 3)):  # one extra Happy image
                ext = "png" if i % 2 else "jpg"
                write_image(root / source / cls / f"{cls}_{i:03d}.{ext}", mode="RGB")
    return root


def fer2013_row(label: int, usage: str, value: int = 7) -> str:
    return f"{label},{' '.join([str(value)] * 2304)},{usage}"


def write_fer2013(root: Path) -> Path:
    rows = ["emotion,pixels,Usage"]
    for i in range(28):
        rows.append(fer2013_row(i % 7, "Training", value=i))
    rows += [fer2013_row(3, "PublicTest"), fer2013_row(6, "PublicTest")]
    rows += [fer2013_row(0, "PrivateTest", value=200), fer2013_row(5, "PrivateTest")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("\n".join(rows) + "\n")
    return root
