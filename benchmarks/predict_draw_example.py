"""The picture of ``tools/predict.py --draw`` (docs/deployment.md): a test scene through a trained
run.

    python benchmarks/predict_draw_example.py --checkpoint runs/ferplus

The scene is the public-domain portrait of Grace Hopper that matplotlib ships, pasted three times
(about 90, 140 and 200 px faces, the middle one mirrored) on a plain gradient. The script runs
``tools/predict.py --draw`` on it and saves the drawn copy, reduced to ``--width`` pixels, as
``runs/predict_draw_demo.jpg`` (``--out``). It prints the CSV rows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from _faces_fixture import PORTRAIT_HEAD, THREE_FACES, portrait  # noqa: E402
from fer_robust.cli import predict as predict_cli  # noqa: E402


def gradient_scene(size=(960, 640)) -> Image.Image:
    """The three heads of ``THREE_FACES`` on a blue-grey gradient."""
    t = np.linspace(0.0, 1.0, size[1])[:, None, None]
    top, bottom = np.array([196, 208, 222]), np.array([92, 104, 120])
    canvas = Image.fromarray(np.broadcast_to(top * (1 - t) + bottom * t,
                                             (size[1], size[0], 3)).astype(np.uint8))
    head = portrait().crop(PORTRAIT_HEAD)
    for x, y, scale, mirrored in THREE_FACES:
        piece = head.resize((round(head.width * scale), round(head.height * scale)), Image.BILINEAR)
        canvas.paste(ImageOps.mirror(piece) if mirrored else piece, (x, y))
    return canvas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--onnx", default=None)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--out", default="runs/predict_draw_demo.jpg")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.png"
        gradient_scene().save(scene)
        model = ["--onnx", args.onnx] if args.onnx else ["--checkpoint", args.checkpoint]
        predict_cli.main([*model, str(scene), "--draw", str(Path(tmp) / "drawn")])
        drawn = Image.open(Path(tmp) / "drawn" / "scene.jpg")
        drawn = drawn.resize((args.width, round(drawn.height * args.width / drawn.width)),
                             Image.LANCZOS)
        drawn.save(args.out, quality=82, optimize=True)
    print(f"saved {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
