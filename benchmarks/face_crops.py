"""How each face detector's box sits on a dataset's face crops, and how many faces it finds.

    python benchmarks/face_crops.py                                   # FERPlus val + demo
    python benchmarks/face_crops.py --dataset rafdb --root /data/RAF-DB/basic --split test

A benchmark's images are themselves face crops, so running a detector on them (each image
upscaled to at least ``--min-side`` pixels and pasted on a plain gray border) says where that
dataset's framing lies relative to the detector's box. For every detector it reports:

- ``found``: share of images in which it finds the face (a box with IoU > 0.3 with the image);
- ``box_to_image``: median image side / box width and the image centre's offset from the box
  centre in box widths: the detector's :class:`~fer_robust.deploy.faces.BoxCalibration` when the
  dataset is FERPlus (the reference framing);
- ``framing``: the dataset's :class:`~fer_robust.data.dataset_facts.FaceFraming` relative to the
  reference (``scale``, ``shift``), as measured through that detector's current calibration;
- ``seconds_per_image`` and, on two photographs without a face (scikit-learn's sample images), the
  number of faces reported (false positives).

Results go to ``benchmarks/results/face_crops.json`` (one key per dataset and split), whose
``provenance`` holds, per key, the command that measured it (a run rewrites only its own keys).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from fer_robust.config import DataConfig  # noqa: E402
from fer_robust.data.registry import build_dataset  # noqa: E402
from fer_robust.deploy.faces import box_iou, build_detector, list_detectors  # noqa: E402
from fer_robust.provenance import provenance, repo_relative  # noqa: E402
from fer_robust.utils import atomic_write_json  # noqa: E402


def on_border(image: np.ndarray, min_side: int, border: float) -> tuple[np.ndarray, tuple]:
    """``image`` upscaled to at least ``min_side`` and centred on a gray canvas ``border`` sides
    wide on each side; returns the canvas and the image's box on it."""
    from PIL import Image
    h, w = image.shape[:2]
    factor = max(1.0, min_side / min(h, w))
    size = (round(w * factor), round(h * factor))
    big = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    pad = round(border * max(size))
    canvas = np.full((size[1] + 2 * pad, size[0] + 2 * pad, 3), 128, np.uint8)
    canvas[pad:pad + size[1], pad:pad + size[0]] = big
    return canvas, (pad, pad, size[0], size[1])


def measure(detector, images, min_side: int, border: float) -> dict:
    """Detection share, box-to-image geometry and framing of ``images`` (RGB uint8 arrays)."""
    cal = detector.calibration
    rows, ious, seconds = [], [], 0.0
    for image in images:
        canvas, truth = on_border(image, min_side, border)
        start = time.perf_counter()
        faces = detector.detect(canvas)
        seconds += time.perf_counter() - start
        best = max(faces, key=lambda f: box_iou(f.box, truth), default=None)
        if best is None or box_iou(best.box, truth) <= 0.3:
            continue
        ious.append(box_iou(best.box, truth))
        x, y, w, h = best.box
        tx, ty, tw, th = truth
        rcx, rcy, rside = cal.reference(best.box)
        rows.append([tw / w, (tx + tw / 2 - x - w / 2) / w, (ty + th / 2 - y - h / 2) / w,
                     tw / rside, (ty + th / 2 - rcy) / rside])
    n = len(images)
    if not rows:
        return {"images": n, "found": 0.0}
    med = np.median(np.asarray(rows), axis=0)
    return {
        "images": n, "found": round(len(rows) / n, 4), "median_iou": round(float(np.median(ious)), 3),
        "box_to_image": {"scale": round(float(med[0]), 3), "shift_x": round(float(med[1]), 3),
                         "shift_y": round(float(med[2]), 3)},
        "framing": {"scale": round(float(med[3]), 3), "shift": round(float(med[4]), 3)},
        "seconds_per_image": round(seconds / n, 4),
    }


def false_positives(detector) -> dict:
    from sklearn.datasets import load_sample_images
    return {name.rsplit("/", 1)[-1]: len(detector.detect(image))
            for name, image in zip(load_sample_images().filenames, load_sample_images().images)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["ferplus", "demo"])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "ferplus"),
                        help="dataset root (ignored for demo)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=0, help="first N images (0 = all)")
    parser.add_argument("--min-side", type=int, default=192,
                        help="images are upscaled to at least this side (dlib's window is 80 px)")
    parser.add_argument("--border", type=float, default=0.5)
    parser.add_argument("--detectors", nargs="+", default=list_detectors())
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "face_crops.json"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    origin = provenance(argv, __file__, cpu=True)
    # Keys of earlier runs stay, so each key keeps the provenance of the run that measured it.
    origins = results.setdefault("provenance", {})
    origins["false_positives_on_photos_without_faces"] = origin
    detectors = {name: build_detector(name, find_eyes=False) for name in args.detectors}
    results["false_positives_on_photos_without_faces"] = {
        name: false_positives(d) for name, d in detectors.items()}
    for name in args.dataset:
        cfg = DataConfig(name=name, root=None if name == "demo" else args.root)
        dataset = build_dataset(cfg, args.split)
        count = len(dataset) if args.limit <= 0 else min(args.limit, len(dataset))
        images = [np.asarray(dataset.load_image(i).convert("RGB")) for i in range(count)]
        key = f"{name}_{args.split}"
        origins[key] = origin if name == "demo" else {**origin, "root": repo_relative(args.root)}
        results[key] = {d: measure(det, images, args.min_side, args.border)
                        for d, det in detectors.items()}
        for d, r in results[key].items():
            print(f"{key} {d}: found {r['found']:.1%} of {r['images']}, "
                  f"box->image {r.get('box_to_image')}, framing {r.get('framing')}, "
                  f"{r.get('seconds_per_image', 0) * 1000:.0f} ms/image")
    print("faces on photos without faces:", results["false_positives_on_photos_without_faces"])
    atomic_write_json(out, results)
    print(f"saved {out}")
    return results


if __name__ == "__main__":
    main()
