"""``tools/export.py``: a trained model as an ONNX file that onnxruntime runs without torch.

    python tools/export.py --checkpoint runs/demo --format onnx
    python tools/export.py --checkpoint runs/ferplus --format onnx --out ferplus.onnx --data-root ../shared/data/ferplus

Writes the inference graph (:mod:`fer_robust.deploy.onnx_export`: eval-mode network with ARM's
running affinity and BatchNorm's running statistics, no MIM head, dynamic batch axis; outputs
``logits`` and ``embedding``) to ``--out`` (default ``<run>/model.onnx``) and checks it:
onnxruntime and PyTorch classify the same real images, the first 32 of the run's validation split
(test, then train, when the run has none), at batch sizes 1 and 32, and the largest differences
go to ``<out>.check.json``. A logit differing by more than ``--tolerance`` (default 1e-4) or a
changed prediction is an error (exit 1). ``tools/predict.py --onnx FILE`` then runs the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fer_robust.cli.common import tool_entry, user_errors_exit

FORMATS = ("onnx",)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run directory (best model), checkpoint folder or weights file")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", type=Path, default=None, help="output file (default <run>/model.onnx)")
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                   help="torch.onnx exporter: torch.export-based (default) or TorchScript-based")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--data-root", default=None, help="dataset root for the check images")
    p.add_argument("--check-images", type=int, default=32)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed |logit difference| between onnxruntime and PyTorch")
    return p.parse_args(argv)


def check_images(cfg, count: int):
    """``(images (M, 3, S, S), "<split> split")``: the first ``count`` images of the run's
    validation split (test, then train, when the run has none) with evaluation transforms."""
    import torch

    from fer_robust.data._reading import SplitNotFoundError
    from fer_robust.data.registry import build_dataset
    from fer_robust.data.transforms import build_transform

    data_cfg = dataclasses.replace(cfg.data, cache_in_memory=False)
    transform = build_transform(data_cfg, train=False)
    splits = ("val", "test", "train") if cfg.data.protocol != "full_train" else ("test", "train")
    for split in splits:
        try:
            dataset = build_dataset(data_cfg, split, transform)
        except SplitNotFoundError:
            continue
        n = min(count, len(dataset))
        return torch.stack([dataset[i][0] for i in range(n)]), f"{split} split"
    raise FileNotFoundError(f"no split of {cfg.data.name} at {cfg.data.root!r} to check the "
                            "export on (pass --data-root)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("export"):
        from fer_robust.data.dataset_facts import face_framing
        from fer_robust.data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from fer_robust.deploy.classifiers import framing_metadata
        from fer_robust.deploy.onnx_export import check_onnx, export_onnx
        from fer_robust.engine.inference import load_trained_model, resolve_checkpoint
        from fer_robust.utils import atomic_write_json

        overrides = [f"data.root={args.data_root}"] if args.data_root else []
        run_dir, weights = resolve_checkpoint(args.checkpoint)
        cfg, model, class_names, _ = load_trained_model(args.checkpoint, overrides)
        out = args.out or run_dir / "model.onnx"
        metadata = {
            "classes": class_names, "img_size": cfg.data.img_size,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "interpolation": "bilinear",
            "dataset": cfg.data.name, "face_framing": framing_metadata(face_framing(cfg.data.name)),
            "arch": cfg.model.arch, "backbone": cfg.model.backbone, "weights": str(weights),
            "outputs": {"logits": "(N, K) class logits", "embedding": "(N, D) l2-normalised"},
        }
        export_onnx(model, out, cfg.data.img_size, metadata, exporter=args.exporter,
                    opset=args.opset)
        images, source = check_images(cfg, args.check_images)
        report = check_onnx(out, model, images, args.batch_sizes, args.tolerance)
        report = {"onnx": str(out), "exporter": args.exporter, "opset": args.opset,
                  "images": source, **report}
        atomic_write_json(Path(f"{out}.check.json"), report)
        worst = max(r["max_abs_logit_diff"] for r in report["batch_sizes"].values())
        print(json.dumps({"onnx": str(out), "passed": report["passed"],
                          "max_abs_logit_diff": worst, "tolerance": args.tolerance,
                          "batch_sizes": args.batch_sizes, "images": source}))
        if not report["passed"]:
            print("export: error: onnxruntime differs from PyTorch: "
                  + "; ".join(report["failures"]), file=sys.stderr)
            raise SystemExit(1)
        print(f"wrote {out} and {out}.check.json")
        return report


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
