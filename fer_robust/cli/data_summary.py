"""Print a benchmark's per-split, per-class image counts.

    python -m fer_robust.cli.data_summary --dataset ferplus --root ../shared/data/ferplus --verify

A split whose folder or file is absent (e.g. FERPlus ``FER2013Test/``) is skipped with a note; any
other format problem stops with an error naming the file (and line), exit status 2. ``--verify``
decodes every image once and lists each one that cannot be decoded with its reason; the tool then
exits 2, unless ``--skip-unreadable`` (training's ``data.skip_unreadable``) leaves them out of
the counts.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fer_robust.cli.common import tool_entry, user_errors_exit
from fer_robust.config import DataConfig
from fer_robust.data.base import DatasetFormatError
from fer_robust.data.registry import dataset_summary, format_summary, list_datasets

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-data-summary", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=list_datasets(), help="dataset name")
    parser.add_argument("--root", default="", help="folder holding the benchmark (see data/README.md)")
    parser.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction,
                        help="share of train carved out as val where a benchmark has no val split")
    parser.add_argument("--split-seed", type=int, default=DataConfig.split_seed,
                        help="seed of the val carve")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="warn about and drop missing/empty (and, with --verify, undecodable) "
                             "images instead of failing")
    parser.add_argument("--verify", action="store_true",
                        help="decode every image once and list the ones that cannot be decoded")
    parser.add_argument("--json", default="", help="also write the summary to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Print the table (and write ``--json``); return the summary. A format error prints one
    line and exits 2."""
    args = build_parser().parse_args(argv)
    data_cfg = DataConfig(name=args.dataset, root=args.root, val_fraction=args.val_fraction,
                          split_seed=args.split_seed, skip_unreadable=args.skip_unreadable)
    with user_errors_exit("data_summary"):
        summary = dataset_summary(data_cfg, verify=args.verify)
        print(format_summary(summary))
        if args.json:
            from fer_robust.utils import atomic_write_json
            atomic_write_json(args.json, summary)
        bad = sum(len(info.get("undecodable", [])) for info in summary["splits"].values())
        if bad and not args.skip_unreadable:
            raise DatasetFormatError(f"{bad} image(s) cannot be decoded (listed above); replace "
                                     "or remove them, or pass --skip-unreadable "
                                     "(data.skip_unreadable=true in training)")
    return summary


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
