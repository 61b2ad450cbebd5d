"""Photographs for the face-detection tests, from files that installed packages ship.

The demo generator's faces are cartoons: dlib's HOG detector finds 62% and OpenCV's Haar cascade
49% of them (``benchmarks/results/face_crops.json``), so they cannot test "every face is found".
These scenes paste a real portrait instead: Grace Hopper's, which matplotlib ships as sample data
(public domain, US Navy), at known positions, sizes and mirrorings onto a real photograph without
faces (scikit-learn's ``china.jpg``), so every true box is known.
"""
from __future__ import annotations

import matplotlib.cbook
import numpy as np
from PIL import Image, ImageOps

#: The face in grace_hopper.jpg (512 x 600), annotated by hand: ear to ear, hat brim to chin.
PORTRAIT_FACE = (162, 135, 203, 200)
#: The part of the portrait pasted into scenes: the head with hat, collar and some flag.
PORTRAIT_HEAD = (100, 70, 420, 400)


def portrait() -> Image.Image:
    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


def background(size: tuple[int, int] = (960, 640)) -> Image.Image:
    """A photograph without a face (scikit-learn's sample image of a temple in China)."""
    from sklearn.datasets import load_sample_image
    return Image.fromarray(load_sample_image("china.jpg")).resize(size, Image.BILINEAR)


def scene(placements, size: tuple[int, int] = (960, 640)):
    """``background`` with the portrait's head pasted at each ``(x, y, scale, mirrored)``.

    Returns ``(image, true_boxes)``: the (x, y, w, h) of each pasted face.
    """
    canvas = background(size)
    head = portrait().crop(PORTRAIT_HEAD)
    fx, fy, fw, fh = PORTRAIT_FACE
    hx, hy, hx1, _ = PORTRAIT_HEAD
    boxes = []
    for x, y, scale, mirrored in placements:
        piece = head.resize((round(head.width * scale), round(head.height * scale)), Image.BILINEAR)
        left = fx - hx
        if mirrored:
            piece = ImageOps.mirror(piece)
            left = (hx1 - hx) - (fx - hx) - fw
        canvas.paste(piece, (x, y))
        boxes.append((x + left * scale, y + (fy - hy) * scale, fw * scale, fh * scale))
    return canvas, boxes


#: A scene with three faces of about 90, 140 and 200 px, the middle one mirrored.
THREE_FACES = [(30, 40, 0.45, False), (300, 250, 0.7, True), (620, 150, 1.0, False)]


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))
