"""``tools/test.py``: evaluate a trained model on a split of its benchmark (or another root).

    python tools/test.py --checkpoint runs/demo --split test --out runs/demo/test.json

Writes JSON with accuracy, mean class accuracy, macro F1, the number of samples, per-class accuracy
and the confusion matrix, and the confusion matrix as a PNG beside it. Results do not depend on
``--batch-size`` (the model is in eval mode: ARM uses its running affinity). ``--predictions
FILE`` also writes every image's probabilities, one CSV row per image: ``index, path, label,
class, confidence, p_<class>``; they equal what ``tools/predict.py --no-detect`` and the Python
API (``fer_robust.load(run).predict(image)``) give the same image.
"""
from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from fer_robust.cli.common import tool_entry, user_errors_exit


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run directory (uses best_model.safetensors), checkpoint folder or weights file")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data-root", default=None, help="another root in the benchmark's on-disk format")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--tta", choices=["none", "hflip"], default="none",
                   help="test-time augmentation: average with the horizontally flipped image")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default: <run>/eval_<split>.json), or a folder for it; the "
                        "PNG goes beside it (--out x.png writes x.png and x.json)")
    p.add_argument("--predictions", type=Path, default=None, metavar="CSV",
                   help="also write every image's class probabilities, one row per image")
    p.add_argument("--cpu", action="store_true")
    return p.parse_args(argv)


def write_predictions(path: Path, dataset, logits, labels, class_names: list[str]) -> None:
    """One CSV row per image of ``dataset``: ``index, path, label`` (its given class), the
    predicted ``class``, its ``confidence`` and ``p_<class>`` for every class."""
    import csv

    import numpy as np

    from fer_robust.utils import atomic_path

    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "path", "label", "class", "confidence",
                         *[f"p_{c}" for c in class_names]])
        for i, (p, label) in enumerate(zip(probs, labels)):
            k = int(p.argmax())
            writer.writerow([i, dataset.paths[i], class_names[int(label)], class_names[k],
                             repr(float(p[k])), *[repr(float(v)) for v in p]])


def result_paths(out: Path | None, run_dir: Path, split: str) -> tuple[Path, Path]:
    """``(json, png)``: where the result and its confusion-matrix picture go. ``--out`` names the
    JSON; an existing folder holds ``eval_<split>.json``; a ``.png`` name is the picture's, with
    the JSON beside it (never one path for both)."""
    if out is None:
        out = run_dir / f"eval_{split}.json"
    elif out.is_dir():
        out = out / f"eval_{split}.json"
    elif out.suffix.lower() == ".png":
        out = out.with_suffix(".json")
    return out, out.with_suffix(".png")


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("test"):
        from fer_robust.data.loaders import build_eval_loader
        from fer_robust.data.registry import build_dataset
        from fer_robust.data.transforms import build_transform
        from fer_robust.engine.distributed import build_accelerator
        from fer_robust.engine.evaluation import (classification_metrics, predict_logits,
                                                  save_confusion_png)
        from fer_robust.engine.inference import load_trained_model
        from fer_robust.engine.protocol import selection_record
        from fer_robust.utils import atomic_write_json, writable_folder

        overrides = [f"data.root={args.data_root}"] if args.data_root else []
        cfg, model, class_names, run_dir = load_trained_model(args.checkpoint, overrides)
        out, png = result_paths(args.out, run_dir, args.split)
        writable_folder(out.parent, "the result's folder")  # before the pass, not after it
        dataset = build_dataset(cfg.data, args.split, build_transform(cfg.data, train=False))
        if dataset.classes != class_names:
            from fer_robust.config import ConfigError
            raise ConfigError(f"the {args.split} split's classes {dataset.classes} differ from the "
                              f"model's {class_names}")
        accelerator = build_accelerator(cfg.mixed_precision, cpu=args.cpu)
        loader = build_eval_loader(dataset, args.batch_size or cfg.optim.eval_batch_size,
                                   cfg.data.num_workers if args.num_workers is None else args.num_workers)
        model, loader = accelerator.prepare(model, loader)
        logits, labels, _ = predict_logits(model, loader, accelerator, hflip_tta=args.tta == "hflip",
                                           desc=f"test {args.split}")
        result = classification_metrics(logits, labels, class_names)
        result.update({"split": args.split, "checkpoint": str(args.checkpoint), "tta": args.tta,
                       "dataset": cfg.data.name, "data_root": cfg.data.root,
                       **selection_record(cfg.data.protocol, run_dir)})
        if accelerator.is_main_process:
            atomic_write_json(out, result)
            save_confusion_png(result["confusion_matrix"], class_names, png,
                               title=f"{cfg.data.name} {args.split}: acc {result['accuracy']:.4f}")
            print(json.dumps({k: result[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1",
                                                     "num_samples", "protocol")}))
            print(f"model selection: {result['model_selection']}")
            print(f"wrote {out} and {png}")
            if args.predictions:
                write_predictions(args.predictions, dataset, logits, labels, class_names)
                print(f"wrote {args.predictions}")
        return result


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
