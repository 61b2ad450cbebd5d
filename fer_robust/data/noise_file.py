"""Label noise read from a file: the noisy training lists that noisy-label FER papers publish.

RUL (Zhang, Wang & Deng, NeurIPS 2021) and EAC (Zhang et al., ECCV 2022) report RAF-DB under
10, 20 and 30% label noise from fixed files, ``noise01.txt``, ``noise02.txt`` and ``noise03.txt``
(EAC's repository, ``raf-basic/EmoLabel/``): RAF-DB's training list with some labels flipped, in the
format of RAF-DB's own ``list_patition_label.txt`` (``train_00001.jpg 5``, labels 1-7).
``data.noise.type=file`` with ``data.noise.file=PATH`` trains on such a file's labels, so a figure
is measured on the very labels a paper used rather than on a fresh draw of the same rate.

A file is in the dataset's own list format (:data:`NOISE_FILE_FORMATS`, one per dataset):

* ``rafdb``: ``<image> <label>`` lines, the names of ``list_patition_label.txt``, labels 1-7;
* ``ferplus``, ``ferplus7``: a CSV of ``<image>,<label>`` rows without a header, the names of
  ``FER2013Train/label.csv``, labels the class ids 0-7 (0-6) in label.csv's column order.

The file is read as untrusted input. A relative ``PATH`` is under ``data.root`` and may not leave
it (``..`` or a link out of it is refused); the file may hold at most
:data:`MAX_NOISE_FILE_BYTES`; a row that names an image by an absolute path or through ``..`` is
refused, as the readers refuse it in a label file (the names are looked up in the clean list, never
opened). It is checked against the clean training
list of the dataset's own label file: the same images, each once, each with a label of the
dataset. A missing or extra image, an unknown label or a duplicate row is a
:class:`~fer_robust.data.base.DatasetFormatError` of one line naming the file and the line.

The labels then replace the training split's, and the run records them like drawn noise
(``noisy_labels.npz``: noisy, clean and changed), so the split's and the relabelling's figures
against the clean labels read the same. The images a validation split holds (a carve of the
training list under ``data.protocol=validation``) keep their clean labels, as with drawn noise; the
papers' protocol is ``full_train``, where the file's every row trains.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from fer_robust.config import ConfigError
from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.ferplus import FERPLUS_SPLIT_FOLDERS, ferplus_labels
from fer_robust.data.rafdb import (RAFDB_LABEL_FILE, parse_partition_file, partition_rows,
                                  rafdb_image_file)
from fer_robust.data._reading import refuse_path_outside_root, require_file

if TYPE_CHECKING:
    from fer_robust.config import DataConfig

__all__ = ["MAX_NOISE_FILE_BYTES", "NoiseFileFormat", "NOISE_FILE_FORMATS",
           "register_noise_file_format", "NoiseFile", "resolve_noise_file", "read_noise_file",
           "noisy_targets_from_file"]

#: The largest noise file read (bytes). RAF-DB's published files are 220 kB and a FERPlus list
#: about 600 kB; anything near this bound is not a label list.
MAX_NOISE_FILE_BYTES = 16 * 2 ** 20

#: ``rows(text, path, num_classes)`` yields ``(line, name, class id)`` per row of a noise file,
#: raising a DatasetFormatError naming ``path`` and the line for a row it cannot read.
RowReader = Callable[[str, Path, int], Iterator[tuple[int, str, int]]]


@dataclass(frozen=True)
class NoiseFileFormat:
    """How one dataset's label list reads.

    Attributes:
        clean_list: ``clean_list(root, num_classes)`` -> ``(names, label_file)``: the training
            images of the dataset's own label file (before any validation carve), by name.
        rows: reads the rows of a noise file (:data:`RowReader`).
        image_file: a list name -> the image's path relative to the split's image folder; the
            training split's samples are matched to the rows by the end of their paths.
    """
    clean_list: Callable[[Path, int], tuple[list[str], Path]]
    rows: RowReader
    image_file: Callable[[str], str]


#: ``data.name`` -> the format of its noise files: the datasets ``data.noise.type=file`` serves.
NOISE_FILE_FORMATS: dict[str, NoiseFileFormat] = {}


def register_noise_file_format(dataset: str, fmt: NoiseFileFormat) -> None:
    if dataset in NOISE_FILE_FORMATS:
        raise ValueError(f"a noise-file format for {dataset!r} is already registered")
    NOISE_FILE_FORMATS[dataset] = fmt


# -- RAF-DB: the published files' format ----------------------------------------------------------
def _rafdb_clean(root: Path, num_classes: int) -> tuple[list[str], Path]:
    label_file = require_file(root / RAFDB_LABEL_FILE, "RAF-DB labels")
    names, _, is_test = parse_partition_file(label_file)
    return [n for n, test in zip(names, is_test) if not test], label_file


def _rafdb_rows(text: str, path: Path, num_classes: int) -> Iterator[tuple[int, str, int]]:
    return partition_rows(text.split("\n"), path)  # the clean list's own row checks


register_noise_file_format("rafdb", NoiseFileFormat(
    clean_list=_rafdb_clean, rows=_rafdb_rows, image_file=rafdb_image_file))


# -- FERPlus: a CSV of names and class ids ---------------------------------------------------------
def _ferplus_clean(root: Path, num_classes: int) -> tuple[list[str], Path]:
    label_file = require_file(root / FERPLUS_SPLIT_FOLDERS["train"] / "label.csv",
                              "FERPlus train labels")
    return ferplus_labels(label_file, num_classes)[0], label_file


def _csv_rows(text: str, path: Path, num_classes: int) -> Iterator[tuple[int, str, int]]:
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise DatasetFormatError(f"{path}:{line}: expected 2 columns '<image>,<label>', got "
                                     f"{len(row)}")
        name = refuse_path_outside_root(row[0].strip(), path, line)
        try:
            label = int(row[1])
        except ValueError:
            raise DatasetFormatError(f"{path}:{line}: label {row[1]!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise DatasetFormatError(f"{path}:{line}: unknown class id {label} (this dataset's "
                                     f"class ids are 0..{num_classes - 1})")
        yield line, name, label


for _name in ("ferplus", "ferplus7"):
    register_noise_file_format(_name, NoiseFileFormat(
        clean_list=_ferplus_clean, rows=_csv_rows, image_file=lambda name: name))


# -- Reading and checking ------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseFile:
    """A noise file as read: where it is, its SHA-256 (which the run records), and its rows as
    ``{name: class id}``."""
    path: Path
    sha256: str
    labels: dict[str, int]


def resolve_noise_file(data_cfg: "DataConfig") -> Path:
    """``data.noise.file`` as a path: a relative one under ``data.root`` (and staying there), an
    absolute one as given. Raises ConfigError when it is empty, escapes the root or is no file."""
    raw = data_cfg.noise.file.strip()
    if not raw:
        raise ConfigError("data.noise.type=file needs data.noise.file=<path of the label list>")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        root = Path(data_cfg.root).resolve()
        path = (root / path).resolve()
        if not path.is_relative_to(root):
            raise ConfigError(f"'data.noise.file': {raw} leads out of data.root ({root}); give a "
                              "path inside it, or an absolute path")
    if not path.is_file():
        raise ConfigError(f"'data.noise.file': not a file: {path}")
    return path


def read_noise_file(data_cfg: "DataConfig", num_classes: int) -> NoiseFile:
    """Read and check ``data.noise.file`` against the clean training list of ``data.name``.

    Raises:
        ConfigError: no format for this dataset, or a bad ``data.noise.file`` path.
        DatasetFormatError: an oversized or non-text file, or a row that does not match the clean
            list (file and line named).
    """
    fmt = NOISE_FILE_FORMATS.get(data_cfg.name)
    if fmt is None:
        raise ConfigError(f"data.noise.type=file: no label-list format for dataset "
                          f"{data_cfg.name!r}; known: {sorted(NOISE_FILE_FORMATS)}")
    path = resolve_noise_file(data_cfg)
    size = path.stat().st_size
    if size > MAX_NOISE_FILE_BYTES:
        raise DatasetFormatError(f"{path}: {size:,} bytes; a label list is far smaller (at most "
                                 f"{MAX_NOISE_FILE_BYTES:,} bytes are read)")
    with open(path, "rb") as f:
        data = f.read(MAX_NOISE_FILE_BYTES + 1)  # the file may have grown since the stat
    if len(data) > MAX_NOISE_FILE_BYTES:
        raise DatasetFormatError(f"{path}: more than {MAX_NOISE_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path}: not a UTF-8 text file ({e.reason} at byte "
                                 f"{e.start})") from None

    clean, label_file = fmt.clean_list(Path(data_cfg.root), num_classes)
    clean_names = set(clean)
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for line, name, label in fmt.rows(text, path, num_classes):
        if name in first_line:
            raise DatasetFormatError(f"{path}:{line}: {name} is listed again (first at line "
                                     f"{first_line[name]})")
        if name not in clean_names:
            what = ("a test image: a noise file lists the training images only"
                    if name.startswith("test_") else
                    f"not in the clean training list ({label_file})")
            raise DatasetFormatError(f"{path}:{line}: {name} is {what}")
        first_line[name] = line
        labels[name] = label
    if len(labels) < len(clean):
        missing = [n for n in clean if n not in labels]
        raise DatasetFormatError(f"{path}: {len(missing)} of the {len(clean)} training images of "
                                 f"{label_file} are missing, first {missing[0]}; the file has "
                                 f"{len(labels)} rows")
    return NoiseFile(path=path, sha256=hashlib.sha256(data).hexdigest(), labels=labels)


def noisy_targets_from_file(data_cfg: "DataConfig", train: FERDataset
                            ) -> tuple[np.ndarray, NoiseFile]:
    """The ``(N,)`` labels ``data.noise.file`` gives the samples of ``train`` (in its order), and
    the file as read (:func:`read_noise_file`)."""
    fmt = NOISE_FILE_FORMATS.get(data_cfg.name)
    noise = read_noise_file(data_cfg, train.num_classes)
    assert fmt is not None  # read_noise_file refused other datasets
    # A sample is matched by the end of its path: its image file relative to the split's folder.
    by_key = {PurePosixPath(fmt.image_file(name)).parts: label
              for name, label in noise.labels.items()}
    depth = len(next(iter(by_key)))
    noisy = np.empty(len(train), dtype=np.int64)
    for i, sample in enumerate(train.paths):
        key = Path(sample).parts[-depth:]
        if key not in by_key:
            raise DatasetFormatError(f"{noise.path}: no row for the training image {sample}")
        noisy[i] = by_key[key]
    return noisy, noise
