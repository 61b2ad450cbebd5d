"""``tools/predict.py``: the expression of every face in photos and videos.

    python tools/predict.py --checkpoint runs/demo photo.jpg group/ clip.mp4 --out faces.csv --draw drawn/
    python tools/predict.py --onnx runs/demo/model.onnx photo.jpg --out faces.csv
    python tools/predict.py --checkpoint runs/demo --no-detect crops/ --out predictions.csv

Faces are found in each image, and in a video's frames sampled ``--video-rate`` times per second,
by a detector whose weights ship in its wheel (``--detector hog``, dlib's, the default; or
``haar``, OpenCV's; both come with ``pip install -e '.[faces]'``, see
:mod:`fer_robust.deploy.faces` for the choice). Each face is cropped the way the training
dataset's images frame a face (``data/README.md``: scale, shift, eye alignment, grayscale) and
classified (``--crop-scale`` and ``--crop-shift`` override the framing, e.g. for a ``folder``
dataset of your own crops). The CSV has one row per face: ``path, frame, time_s, face, x, y, w, h, score``, the
eye centres ``left_eye_x, left_eye_y, right_eye_x, right_eye_y`` when both were found (else
empty), ``class, confidence`` and ``p_<class>`` for every class. ``--draw DIR`` writes a copy of
each image (each sampled frame) with the boxes, labels and eye points drawn.

``--no-detect`` classifies each image as a whole, as a ready face crop: one row per image with
``path, class, confidence, p_<class>``.

``--onnx FILE`` (written by ``tools/export.py``) runs the model with onnxruntime; that path
imports neither torch nor any training code.

The model is loaded and run through the Python API (:func:`fer_robust.load`,
:mod:`fer_robust.deploy.api`): ``--no-detect`` rows are ``model.predict_batch`` of the images, face
rows ``model.predict_photo`` of each image or frame. ``--device`` picks where a PyTorch model runs
(default: the GPU when there is one).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from fer_robust.cli.common import tool_entry, user_errors_exit
from fer_robust.deploy.faces import list_detectors

FACE_COLUMNS = ("path", "frame", "time_s", "face", "x", "y", "w", "h", "score", "left_eye_x",
                "left_eye_y", "right_eye_x", "right_eye_y")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="run directory, checkpoint or weights file")
    model.add_argument("--onnx", type=Path, help="ONNX file written by tools/export.py")
    p.add_argument("--device", default=None,
                   help="where a --checkpoint model runs: cpu, cuda, cuda:1... (default: the GPU "
                        "when there is one)")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="image or video files, or folders (searched recursively)")
    p.add_argument("--out", type=Path, default=None, help="CSV with one row per face (an existing folder holds predictions.csv)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", choices=["none", "hflip"], default="none")
    p.add_argument("--no-detect", action="store_true",
                   help="classify each image as a whole (ready face crops), no detection")
    p.add_argument("--detector", default="hog", choices=list_detectors(),
                   help="face detector: hog (dlib's, default) or haar (OpenCV's)")
    p.add_argument("--min-face", type=int, default=40, help="smallest face side searched, pixels")
    p.add_argument("--video-rate", type=float, default=1.0,
                   help="frames sampled per second of video (0: every frame)")
    p.add_argument("--draw", type=Path, default=None,
                   help="folder for copies of the images with boxes and labels drawn")
    p.add_argument("--crop-scale", type=float, default=None,
                   help="crop side relative to the reference framing (default: the training "
                        "dataset's, data/README.md)")
    p.add_argument("--crop-shift", type=float, default=None,
                   help="crop centre below the reference centre, in reference sides (default: "
                        "the training dataset's)")
    return p.parse_args(argv)


def _class_columns(class_names: list[str], probs) -> dict:
    k = int(probs.argmax())
    return {"class": class_names[k], "confidence": float(probs[k]),
            **{f"p_{c}": float(v) for c, v in zip(class_names, probs)}}


class _DrawnNames:
    """File names in the ``--draw`` folder: the input's stem (plus ``_f<frame>`` for a video
    frame), made unique when two inputs share a stem."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[tuple[Path, str], str] = {}
        self.used: set[str] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, source: Path, frame: int | None) -> Path:
        key = (source, "")
        if key not in self.seen:
            stem, n = source.stem, 1
            while stem in self.used:
                n += 1
                stem = f"{source.stem}_{n}"
            self.used.add(stem)
            self.seen[key] = stem
        stem = self.seen[key]
        return self.folder / (f"{stem}_f{frame:06d}.jpg" if frame is not None else f"{stem}.jpg")


def predict_faces(model, detector, files: list[Path], args) -> tuple[list[dict], dict]:
    """One row per face ``detector`` finds (see the module docstring) and counts for the summary
    line."""
    from fer_robust.deploy.media import draw_faces, is_video, read_frames

    framing = model.with_framing(scale=args.crop_scale, shift=args.crop_shift)
    names = _DrawnNames(args.draw) if args.draw else None
    rows: list[dict] = []
    counts = {"frames": 0, "faces": 0, "frames_without_face": 0}
    for path in files:
        for frame in read_frames(path, args.video_rate):
            faces = model.predict_photo(frame.rgb, detector=detector, framing=framing,
                                        hflip=args.tta == "hflip", batch_size=args.batch_size)
            counts["frames"] += 1
            counts["faces"] += len(faces)
            counts["frames_without_face"] += not faces
            for j, face in enumerate(faces):
                eyes = ([round(v, 1) for point in face.eyes for v in point] if face.eyes
                        else [None] * 4)
                rows.append(dict(zip(FACE_COLUMNS, [
                    str(path), frame.frame, frame.time_s, j, *(round(v, 1) for v in face.box),
                    round(face.score, 4), *eyes])) | _class_columns(model.class_names, face.probs))
            if names is not None:
                drawn = draw_faces(frame.rgb, [f.box for f in faces],
                                   [f"{f.label} {f.confidence:.2f}" for f in faces],
                                   [int(f.probs.argmax()) for f in faces],
                                   [list(f.eyes) if f.eyes else None for f in faces])
                drawn.save(names.path(path, frame.frame if is_video(path) else None), quality=90)
    return rows, counts


def predict_images(model, files: list[Path], args) -> list[dict]:
    """``--no-detect``: one row per image, the whole image classified as a face crop."""
    import numpy as np

    from fer_robust.deploy.media import draw_faces, read_image

    names = _DrawnNames(args.draw) if args.draw else None
    rows = []
    for start in range(0, len(files), args.batch_size):
        chunk = files[start:start + args.batch_size]
        images = [read_image(f) for f in chunk]
        probs = model.predict_batch(images, hflip=args.tta == "hflip", batch_size=args.batch_size)
        for f, image, p in zip(chunk, images, probs):
            rows.append({"path": str(f)} | _class_columns(model.class_names, p))
            if names is not None:
                k = int(p.argmax())
                label = f"{model.class_names[k]} {float(p[k]):.2f}"
                draw_faces(np.asarray(image), [(0, 0, *image.size)], [label],
                           [k]).save(names.path(f, None), quality=90)
    return rows


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    with user_errors_exit("predict"):
        from fer_robust.deploy.api import load
        from fer_robust.deploy.media import list_inputs
        from fer_robust.utils import atomic_path, writable_folder

        files = list_inputs(args.inputs, videos=not args.no_detect)
        # Where the results go is checked before any work (a folder that cannot be written).
        if args.out:
            csv_file = args.out / "predictions.csv" if args.out.is_dir() else args.out
            writable_folder(csv_file.parent, "--out folder")
        if args.draw:
            writable_folder(args.draw, "--draw folder")
        detector = None
        if not args.no_detect:  # before the model: a missing extra stops the tool at once
            from fer_robust.deploy.faces import build_detector
            detector = build_detector(args.detector, min_face=args.min_face)
        model = load(args.onnx if args.onnx is not None else args.checkpoint,
                     device=None if args.onnx is not None else args.device)
        if args.no_detect:
            rows = predict_images(model, files, args)
            summary = f"{len(rows)} images classified as face crops"
        else:
            if not model.framing.measured and args.crop_scale is None:
                print(f"predict: note: how {model.dataset or 'this dataset'}'s images frame "
                      "a face is an estimate (data/README.md, 'Faces in photos')", file=sys.stderr)
            rows, counts = predict_faces(model, detector, files, args)
            summary = (f"{counts['faces']} faces in {counts['frames']} images or video frames "
                       f"({counts['frames_without_face']} without a face)")
        for r in rows:
            where = r["path"] + (f"#{r['frame']}" if r.get("time_s") is not None else "")
            box = f"\t({r['x']:.0f}, {r['y']:.0f}, {r['w']:.0f}, {r['h']:.0f})" if "x" in r else ""
            print(f"{where}{box}\t{r['class']}\t{r['confidence']:.3f}")
        print(summary, file=sys.stderr)
        if args.out:
            columns = list(rows[0]) if rows else list(FACE_COLUMNS) + ["class", "confidence"] + [
                f"p_{c}" for c in model.class_names]
            out = args.out / "predictions.csv" if args.out.is_dir() else args.out
            with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            print(f"wrote {out}", file=sys.stderr)
        if args.draw:
            print(f"drew {args.draw}", file=sys.stderr)
        return rows


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
