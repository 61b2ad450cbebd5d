"""Build any dataset's split from a :class:`~fer_robust.config.DataConfig`, and summarise it.

``data.name`` picks the reader; ``data.root``, ``data.val_fraction``, ``data.split_seed`` and
``data.skip_unreadable`` are passed on; ``data.cache_in_memory`` decodes the split once after
reading. Readers live one per dataset (``ferplus.py``, ``rafdb.py`` ...) and register here by name
with :func:`register_dataset` (timm's pattern, as :mod:`fer_robust.models.factory` does for
models): that registry is the one list of ``data.name`` values, and config validation asks it.
Adding a dataset is one reader plus one registered function here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from fer_robust.config import ConfigError
from fer_robust.data._reading import SplitNotFoundError
from fer_robust.data.affectnet import read_affectnet
from fer_robust.data.base import FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS, SPLITS
from fer_robust.data.demo import build_demo_dataset
from fer_robust.data.fer2013 import read_fer2013
from fer_robust.data.ferplus import read_ferplus
from fer_robust.data.image_folder import read_image_folder
from fer_robust.data.rafdb import read_rafdb
from fer_robust.data.sfew import read_sfew
from fer_robust.data.verify import check_decodable, find_undecodable, should_verify
from fer_robust.utils import register_in

if TYPE_CHECKING:
    from fer_robust.config import DataConfig

__all__ = ["register_dataset", "list_datasets", "needs_root", "build_dataset", "read_split",
           "dataset_summary", "format_summary"]

Reader = Callable[["DataConfig", str], FERDataset]
_READERS: dict[str, Reader] = {}
# Datasets drawn in memory (the demo faces): the only ones that read nothing under data.root.
_DRAWN: set[str] = set()


def register_dataset(name: str, drawn: bool = False) -> Callable[[Reader], Reader]:
    """Decorator registering ``reader(data_cfg, split) -> FERDataset`` as ``data.name=name``;
    ``drawn``: the reader makes its images and needs no ``data.root``."""
    if drawn:
        _DRAWN.add(name)
    return register_in(_READERS, "dataset", name)


def list_datasets() -> list[str]:
    """Names accepted by ``DataConfig.name``, in registration order."""
    return list(_READERS)


def needs_root(name: str) -> bool:
    """Whether dataset ``name`` reads files under ``data.root`` (so an empty root is an error)."""
    return name not in _DRAWN


def _file_options(data_cfg: "DataConfig", split: str) -> tuple[dict, dict]:
    """``(common, carve)`` keyword arguments of a reader of files under ``data.root``: every
    reader takes ``common``; those that carve a validation split from train also take ``carve``."""
    if not data_cfg.root:
        raise ConfigError(f"data.root is empty: set it to the folder holding the {data_cfg.name} "
                         "dataset (see data/README.md for each dataset's layout)")
    if data_cfg.protocol == "full_train":
        if split == "val":
            raise ConfigError("data.protocol=full_train has no validation split: the whole training "
                             "split trains and the last epoch is kept")
        carve = dict(val_fraction=0.0, split_seed=data_cfg.split_seed)  # train keeps every row
    else:
        carve = dict(val_fraction=data_cfg.val_fraction, split_seed=data_cfg.split_seed)
    return dict(skip_unreadable=data_cfg.skip_unreadable), carve


@register_dataset("demo", drawn=True)
def _demo(data_cfg: "DataConfig", split: str) -> FERDataset:
    return build_demo_dataset(data_cfg, split)  # drawn: no root, no files


@register_dataset("ferplus")
def _ferplus(data_cfg: "DataConfig", split: str) -> FERDataset:
    common, _ = _file_options(data_cfg, split)  # FERPlus ships its own validation split
    return read_ferplus(data_cfg.root, split, **common)


@register_dataset("ferplus7")
def _ferplus7(data_cfg: "DataConfig", split: str) -> FERDataset:
    common, _ = _file_options(data_cfg, split)  # EAC's and RUL's 7 classes: contempt dropped
    return read_ferplus(data_cfg.root, split, num_classes=7, **common)


def _carving_reader(read: Callable[..., FERDataset], **fixed) -> Reader:
    """A reader of files under ``data.root`` whose validation split is carved from train."""
    def reader(data_cfg: "DataConfig", split: str) -> FERDataset:
        common, carve = _file_options(data_cfg, split)
        return read(data_cfg.root, split, **fixed, **common, **carve)
    return reader


for _name, _reader in {
    "rafdb": _carving_reader(read_rafdb),
    "affectnet7": _carving_reader(read_affectnet, num_classes=7),
    "affectnet8": _carving_reader(read_affectnet, num_classes=8),
    "sfew": _carving_reader(read_sfew),
    "fer2013": _carving_reader(read_fer2013),
    "folder": _carving_reader(read_image_folder),
}.items():
    register_dataset(_name)(_reader)


def read_split(data_cfg: "DataConfig", split: str) -> FERDataset:
    """The raw split (no transform, no cache) from the reader ``data_cfg.name`` names."""
    if data_cfg.name not in _READERS:
        raise ValueError(f"unknown dataset {data_cfg.name!r}; known: {list_datasets()}")
    return _READERS[data_cfg.name](data_cfg, split)


def train_subset(dataset: FERDataset, fraction: float, seed: int) -> FERDataset:
    """A seeded share ``fraction`` of ``dataset``, taken class by class (``round(fraction * n_c)``
    of class ``c``, at least one, so no class drops out). The same (fraction, seed) gives the same
    images on every process and run."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.train_fraction must be in (0, 1], got {fraction}")
    from fer_robust.data.splits import stratified_split
    rest, kept = stratified_split(dataset.targets, fraction, seed)
    missing = np.setdiff1d(np.unique(dataset.targets), dataset.targets[kept])
    if missing.size:  # a class too small for its share keeps one (seeded) image
        rng = np.random.default_rng(seed)
        extra = [rng.choice(rest[dataset.targets[rest] == c]) for c in missing]
        kept = np.sort(np.concatenate([kept, np.asarray(extra, np.int64)]))
    return dataset.subset(kept)


def build_dataset(data_cfg: "DataConfig", split: str, transform: Callable | None = None) -> FERDataset:
    """Split ``split`` of the benchmark ``data_cfg`` describes, with ``transform`` set.

    Every image is decoded once first when ``data_cfg.verify_images`` says so
    (:func:`~fer_robust.data.verify.check_decodable`: an error naming the broken files, or with
    ``data.skip_unreadable`` the split without them). With ``data_cfg.cache_in_memory`` every
    image is decoded once into one uint8 array
    (:meth:`FERDataset.cache_in_memory`): worth it for FERPlus (25k 48x48 faces, ~170 MB as RGB)
    and the demo set, whose per-image decode or drawing costs more than the transform.
    """
    dataset = read_split(data_cfg, split)
    if split == "train" and data_cfg.train_fraction < 1.0:
        dataset = train_subset(dataset, data_cfg.train_fraction, data_cfg.split_seed)
    if needs_root(data_cfg.name) and should_verify(data_cfg.verify_images, len(dataset)):
        # One pass decodes each image for the check and, when asked, for the cache.
        dataset = check_decodable(dataset, data_cfg.skip_unreadable, data_cfg.cache_in_memory)
    elif data_cfg.cache_in_memory:
        dataset.cache_in_memory()
    dataset.transform = transform
    return dataset


def dataset_summary(data_cfg: "DataConfig", verify: bool = False) -> dict:
    """Per-split, per-class counts of a benchmark, for the summary table and reports.

    With ``verify`` every image is decoded once (:func:`~fer_robust.data.verify.find_undecodable`)
    and each split lists its undecodable images; with ``data_cfg.skip_unreadable`` they are left
    out of the counts (as training leaves them out), otherwise counted.

    Returns:
        ``{"name", "root", "classes", "splits": {split: {"total", "per_class": {class: n},
        "notes", "undecodable": [{"path", "reason"}] (with verify)} or {"absent": reason}}}``.
        A split whose folder or file is absent is reported as absent; any other format problem
        raises.
    """
    summary: dict = {"name": data_cfg.name, "root": data_cfg.root, "classes": None, "splits": {}}
    for split in SPLITS:
        try:
            ds = read_split(data_cfg, split)
        except SplitNotFoundError as e:
            summary["splits"][split] = {"absent": str(e)}
            continue
        info: dict = {}
        if verify:
            bad = find_undecodable(ds)
            info["undecodable"] = [{"path": b.path, "reason": b.reason} for b in bad]
            if bad and data_cfg.skip_unreadable:
                notes = [*getattr(ds, "notes", []), f"left out {len(bad)} undecodable image(s)"]
                ds = ds.subset(np.setdiff1d(np.arange(len(ds)), [b.index for b in bad]))
                ds.notes = notes
        counts = np.bincount(ds.clean_targets, minlength=ds.num_classes)
        summary["classes"] = list(ds.classes)
        summary["splits"][split] = {
            "total": int(counts.sum()),
            "per_class": {c: int(n) for c, n in zip(ds.classes, counts)},
            "notes": list(getattr(ds, "notes", [])),
            **info,
        }
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table: one row per class, one column per present split, then notes."""
    present = [s for s in SPLITS if "absent" not in summary["splits"].get(s, {"absent": ""})]
    classes = summary["classes"] or []
    width = max([len("class"), len("total")] + [len(c) for c in classes])
    header = f"{'class':<{width}}" + "".join(f"{s:>10}" for s in present)
    lines = [f"{summary['name']} ({summary['root'] or 'drawn'})", header, "-" * len(header)]
    for c in classes:
        lines.append(f"{c:<{width}}" + "".join(f"{summary['splits'][s]['per_class'][c]:>10,}"
                                                for s in present))
    lines.append("-" * len(header))
    lines.append(f"{'total':<{width}}" + "".join(f"{summary['splits'][s]['total']:>10,}"
                                                  for s in present))
    spec = DATASET_SPECS.get(summary["name"])
    for s in SPLITS:
        info = summary["splits"].get(s, {})
        if "absent" in info:
            lines.append(f"note: {s} split absent ({info['absent']})")
            continue
        expected = spec.expected_counts.get(s) if spec else None
        if expected is not None and info.get("total") != expected:
            lines.append(f"note: {s} has {info['total']:,} images; the standard protocol has "
                         f"{expected:,}")
        for note in info.get("notes", []):
            lines.append(f"note: {s}: {note}")
        if "undecodable" in info:
            bad = info["undecodable"]
            lines.append(f"verify: {s}: every image decodes" if not bad else
                         f"verify: {s}: {len(bad)} image(s) cannot be decoded:")
            lines.extend(f"  {b['path']}: {b['reason']}" for b in bad)
    return "\n".join(lines)
