"""Photos and videos in, frames out; predictions drawn onto copies of them.

Images are read with PIL (EXIF orientation applied, as a phone photo is shown); video files with
OpenCV (the ``faces`` extra), sampled at a rate the user sets. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from fer_robust.data.decode import DECODE_ERRORS, to_rgb
from fer_robust.deploy.extras import require

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Frame", "list_inputs", "read_image", "read_frames",
           "draw_faces"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


@dataclass
class Frame:
    """One picture to search: a still image (``frame`` 0, ``time_s`` None) or a video frame.

    Attributes:
        path: the file it came from.
        frame: frame index in the video (0 for an image).
        time_s: the frame's time in seconds, or None for an image.
        rgb: ``(H, W, 3)`` uint8 pixels.
    """
    path: Path
    frame: int
    time_s: float | None
    rgb: np.ndarray


def list_inputs(inputs: Sequence[Path], videos: bool = True) -> list[Path]:
    """Image (and, with ``videos``, video) files among ``inputs``; folders are searched
    recursively, in sorted order. Raises FileNotFoundError for a missing path or when nothing is
    found."""
    suffixes = IMAGE_SUFFIXES | (VIDEO_SUFFIXES if videos else set())
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_image(path: Path) -> Image.Image:
    """The image at ``path`` in 8-bit RGB (converted by bit depth, as training reads images:
    :func:`~fer_robust.data.decode.to_rgb`), turned upright by its EXIF orientation. A file Pillow
    cannot decode, or one over its pixel limit (a decompression bomb: a small PNG that claims
    20000x20000 pixels), is one error naming it, as in training."""
    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))
    except DECODE_ERRORS as e:
        raise FileNotFoundError(f"cannot read image {path}: {e}") from None


def read_frames(path: Path, video_rate: float = 1.0) -> Iterator[Frame]:
    """The frames of ``path``: the image itself, or a video's frames sampled ``video_rate`` times
    per second (every ``round(fps / video_rate)``-th frame from the first; every frame when the
    rate is at least the video's)."""
    path = Path(path)
    if not is_video(path):
        yield Frame(path, 0, None, np.asarray(read_image(path)))
        return
    cv2 = require("cv2", "faces", "reading video files", "opencv-python-headless")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(1, round(fps / video_rate)) if video_rate > 0 else 1
        index = 0
        while True:
            if index % step:
                if not capture.grab():  # skipped frames are not decoded
                    break
            else:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield Frame(path, index, round(index / fps, 3),
                            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()


# One colour per class position (colour-blind-safe palette of Okabe and Ito, then greys).
_PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
            (213, 94, 0), (204, 121, 167), (120, 120, 120), (200, 200, 200)]


def draw_faces(rgb: np.ndarray, boxes: Sequence[tuple[float, float, float, float]],
               labels: Sequence[str], class_ids: Sequence[int],
               points: Sequence[Sequence[tuple[float, float]] | None] = ()) -> Image.Image:
    """A copy of ``rgb`` with each box, its label above it and its landmark points drawn."""
    image = Image.fromarray(np.ascontiguousarray(rgb)).convert("RGB")
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 300))
    for i, (box, label, k) in enumerate(zip(boxes, labels, class_ids)):
        x, y, w, h = box
        colour = _PALETTE[k % len(_PALETTE)]
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=line)
        font = ImageFont.load_default(size=max(12, round(w / 7)))
        left, top, right, bottom = draw.textbbox((x, y), label, font=font)
        text_w, text_h = right - left + 2 * line, bottom - top + 2 * line
        text_y = y - text_h if y - text_h >= 0 else y + h  # above the box, or below at the top
        draw.rectangle([x, text_y, x + text_w, text_y + text_h], fill=colour)
        draw.text((x + line, text_y + line - (top - y)), label, fill=(0, 0, 0), font=font)
        for px, py in (points[i] if i < len(points) and points[i] else ()):
            r = line + 1
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
    return image
