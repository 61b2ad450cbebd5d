"""``tools/predict.py``: the expression in one image or in every image of a folder.

    python tools/predict.py --checkpoint runs/demo path/to/face.jpg
    python tools/predict.py --checkpoint runs/demo path/to/folder --out predictions.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from fer_robust.cli.common import tool_entry, user_errors_exit

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV with one row per image (an existing folder holds predictions.csv)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", choices=["none", "hflip"], default="none")
    return p.parse_args(argv)


def list_images(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    with user_errors_exit("predict"):
        import torch
        from PIL import Image

        from fer_robust.data.decode import DECODE_ERRORS, to_rgb
        from fer_robust.data.transforms import build_transform
        from fer_robust.engine.evaluation import tta_logits
        from fer_robust.engine.inference import load_trained_model
        from fer_robust.utils import atomic_path

        cfg, model, class_names, _ = load_trained_model(args.checkpoint)
        transform = build_transform(cfg.data, train=False)
        files = list_images(args.inputs)
        rows = []
        with torch.no_grad():
            for start in range(0, len(files), args.batch_size):
                chunk = files[start:start + args.batch_size]
                images = []
                for f in chunk:
                    try:
                        with Image.open(f) as img:
                            images.append(transform(to_rgb(img)))
                    except DECODE_ERRORS as e:
                        raise FileNotFoundError(f"cannot read image {f}: {e}") from None
                probs = tta_logits(model, torch.stack(images), args.tta == "hflip").softmax(1)
                for f, p in zip(chunk, probs):
                    k = int(p.argmax())
                    rows.append({"path": str(f), "class": class_names[k], "confidence": float(p[k]),
                                 **{f"p_{c}": float(v) for c, v in zip(class_names, p)}})
        for r in rows:
            print(f"{r['path']}\t{r['class']}\t{r['confidence']:.3f}")
        if args.out:
            out = args.out / "predictions.csv" if args.out.is_dir() else args.out
            with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            print(f"wrote {out}", file=sys.stderr)
        return rows


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
