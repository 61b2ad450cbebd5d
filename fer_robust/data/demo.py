"""A small SYNTHETIC expression dataset that the package draws itself (no download).

Every image is a cartoon face drawn with PIL: the expression lives in the mouth (curve, opening,
width, asymmetry), the brows (height, tilt) and the eyes (openness), plus a nose wrinkle for
disgust. Around it each image draws its own nuisance: face position and scale, aspect, skin tone,
background, clothing, optional hair and glasses, a small rotation and pixel noise.

Expressions are drawn at a random *intensity* (a half-strength smile is close to neutral) and each
"person" adds its own jitter to every facial parameter, so neighbouring classes (neutral/sad,
surprise/fear, angry/disgust) overlap a little: the set is learnable, but not trivially.

Images are never stored: image ``index`` of ``split`` is drawn from a random generator seeded by
``(seed, split, index)``, so any worker can regenerate any sample and two runs see identical pixels.
This data is for smoke tests, tutorials and CI; it says nothing about real facial expressions.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fer_robust.data.base import FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS

if TYPE_CHECKING:
    from fer_robust.config import DataConfig

__all__ = ["DEMO_CLASSES", "DEMO_SPLITS", "draw_face", "demo_targets", "DemoFaceLoader",
           "build_demo_dataset", "save_demo_as_image_folder"]

#: Class order of the demo set (spelled once, in
#: :data:`fer_robust.data.dataset_facts.DATASET_SPECS`).
DEMO_CLASSES: tuple[str, ...] = DATASET_SPECS["demo"].classes

#: Split names and the integer that separates their random streams.
DEMO_SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Facial parameters, as offsets from a neutral face (0 everywhere):
#   curve      mouth curvature, + = corners up (smile)     open     mouth opening (0 = closed)
#   width      relative change of mouth width              asym     one corner raised (sneer)
#   brow_raise brows moved up (+) / down (-)               brow_tilt inner ends up (+) / down (-)
#   eye_open   relative change of eye height               wrinkle  nose wrinkle strength
_PARAMS = ("curve", "open", "width", "asym", "brow_raise", "brow_tilt", "eye_open", "wrinkle")
# One row per class in DEMO_CLASSES order; a full-intensity expression moves the face by this much.
_EXPRESSION_OFFSETS = np.array([
    # curve  open  width  asym  b_raise b_tilt eye   wrinkle
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],   # neutral
    [1.00, 0.20, 0.25, 0.00, 0.15, 0.00, -0.30, 0.00],  # happy
    [-0.80, 0.00, -0.10, 0.00, -0.10, 0.90, -0.25, 0.00],  # sad
    [0.00, 1.00, -0.30, 0.00, 1.00, 0.20, 0.55, 0.00],  # surprise
    [-0.30, 0.00, -0.20, 0.00, -0.60, -1.00, -0.30, 0.00],  # angry
    [-0.40, 0.10, 0.00, 1.00, -0.35, -0.30, -0.30, 1.00],  # disgust
    [-0.20, 0.45, 0.30, 0.00, 0.65, 0.75, 0.50, 0.00],  # fear
], dtype=np.float64)
# Per-person standard deviation of each parameter: idiosyncrasies that blur the class borders.
_PERSON_JITTER = np.array([0.06, 0.03, 0.04, 0.06, 0.06, 0.08, 0.05, 0.05])
# Intensity of the expression, uniform in this range: weak expressions are the ambiguous ones.
_INTENSITY_RANGE = (0.85, 1.0)
# Drawing happens at this multiple of the output size and is box-filtered down (anti-aliasing).
_SUPERSAMPLE = 2


def _skin_tone(rng: np.random.Generator) -> tuple[int, int, int]:
    """A skin colour between a light and a dark tone, with a little hue jitter."""
    light, dark = np.array([241, 206, 180]), np.array([92, 58, 40])
    t = rng.uniform(0.0, 1.0)
    rgb = light * (1 - t) + dark * t + rng.normal(0, 6, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


# Black, dark brown, brown, auburn, blond, grey.
_HAIR_COLOURS = np.array([[25, 20, 20], [60, 40, 25], [105, 70, 40], [140, 60, 30], [215, 180, 110],
                          [160, 160, 160]])


def _hair_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    rgb = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 10, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _face_parameters(expression: int, rng: np.random.Generator) -> dict[str, float]:
    """Expression offsets scaled by a random intensity, plus this person's own jitter."""
    intensity = rng.uniform(*_INTENSITY_RANGE)
    values = intensity * _EXPRESSION_OFFSETS[expression] + rng.normal(0.0, _PERSON_JITTER)
    params = dict(zip(_PARAMS, values.tolist()))
    # A sneer raises either corner: the side carries no class information (and hflip stays valid).
    params["asym"] *= rng.choice([-1.0, 1.0])
    return params


def draw_face(expression: int, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw one synthetic face showing ``expression`` (an index into :data:`DEMO_CLASSES`).

    Args:
        expression: class index in ``[0, 7)``.
        rng: source of every random choice (expression intensity, identity and nuisance); the
            same generator state always gives the same pixels.
        size: output side length in pixels.

    Returns:
        An RGB ``size x size`` PIL image.
    """
    if not 0 <= expression < len(DEMO_CLASSES):
        raise ValueError(f"expression must be in 0..{len(DEMO_CLASSES) - 1}, got {expression}")
    p = _face_parameters(expression, rng)
    s = size * _SUPERSAMPLE
    background = _random_colour(rng, 70, 190)
    img = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(img)
    line = max(1, round(s / 28))  # stroke width that scales with the image

    # Head geometry: position, scale and aspect jitter.
    cx = s * (0.5 + rng.uniform(-0.04, 0.04))
    cy = s * (0.5 + rng.uniform(-0.03, 0.03))
    rx = s * 0.36 * rng.uniform(0.92, 1.05)
    ry = rx * rng.uniform(1.15, 1.3)

    # Shoulders (clothing), then hair behind the head, then the head.
    shirt = _random_colour(rng, 60, 200)
    draw.ellipse([cx - 2.2 * rx, cy + 0.85 * ry, cx + 2.2 * rx, cy + 2.6 * ry], fill=shirt)
    skin = _skin_tone(rng)
    draw.rectangle([cx - 0.35 * rx, cy + 0.6 * ry, cx + 0.35 * rx, cy + 1.1 * ry], fill=skin)  # neck
    has_hair = rng.random() < 0.5
    hair = _hair_colour(rng)
    if has_hair:
        draw.ellipse([cx - 1.1 * rx, cy - 1.12 * ry, cx + 1.1 * rx, cy + 0.3 * ry], fill=hair)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    if has_hair:
        # Fringe: the chord of the head ellipse above a random hairline (kept above the brows).
        hairline = rng.uniform(0.66, 0.8)
        a = math.degrees(math.asin(hairline))
        draw.chord([cx - rx, cy - ry, cx + rx, cy + ry], 180 + a, 360 - a, fill=hair)

    # Eyes.
    eye_y = cy - 0.15 * ry
    eye_dx = 0.4 * rx
    eye_w = 0.22 * rx
    eye_h = max(0.05, 0.55 + 0.35 * p["eye_open"]) * eye_w
    dark = (25, 20, 20)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse([ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h], fill=(250, 250, 250),
                     outline=dark, width=max(1, line // 2))
        pupil = min(eye_h, 0.45 * eye_w)
        draw.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=dark)

    # Brows: height and tilt (inner end up = sad/fear, inner end down = anger).
    brow_y = eye_y - 0.22 * ry - 0.12 * ry * p["brow_raise"]
    tilt = 0.13 * ry * p["brow_tilt"]
    # Brows always darker than the skin, so they stay visible on dark skin under dark hair.
    brow_colour = tuple(min(h, int(0.45 * c)) for h, c in zip(hair if has_hair else dark, skin))
    for side in (-1, 1):
        inner_x, outer_x = cx + side * 0.16 * rx, cx + side * 0.68 * rx
        draw.line([(inner_x, brow_y - tilt), (outer_x, brow_y + 0.3 * tilt)], fill=brow_colour,
                  width=line + 2)

    # Glasses (optional), over eyes but under brows' reach.
    if rng.random() < 0.05:
        frame = _random_colour(rng, 0, 120)
        r = 1.35 * eye_w
        for side in (-1, 1):
            ex = cx + side * eye_dx
            draw.ellipse([ex - r, eye_y - 0.8 * r, ex + r, eye_y + 0.8 * r], outline=frame,
                         width=line)
        draw.line([(cx - eye_dx + r, eye_y), (cx + eye_dx - r, eye_y)], fill=frame, width=line)

    # Nose, and the wrinkles of disgust beside its bridge.
    shade = tuple(int(c * 0.75) for c in skin)
    nose_top, nose_tip = cy - 0.02 * ry, cy + 0.22 * ry
    draw.line([(cx, nose_top), (cx - 0.08 * rx, nose_tip), (cx + 0.06 * rx, nose_tip)], fill=shade,
              width=line)
    if p["wrinkle"] > 0.3:
        strength = min(1.0, p["wrinkle"])
        for side in (-1, 1):
            x0 = cx + side * 0.12 * rx
            for k in range(2):
                y = nose_top + (0.04 + 0.07 * k) * ry
                draw.line([(x0, y), (x0 + side * 0.14 * rx * strength, y - 0.03 * ry)],
                          fill=shade, width=line)

    # Mouth: a parabola whose centre drops for a smile; corners tilt for a sneer; opening fills it.
    mouth_y = cy + 0.47 * ry
    half_w = 0.42 * rx * max(0.4, 1.0 + p["width"])
    curve = 0.2 * ry * p["curve"]
    asym = 0.1 * ry * p["asym"]
    opening = 0.32 * ry * max(0.0, p["open"])
    xs = np.linspace(-1.0, 1.0, 15)
    upper = [(cx + half_w * u, mouth_y + curve * (1 - u * u) - curve * 0.5 - asym * u) for u in xs]
    lips = (150, 40, 50)
    if opening > 0.02 * ry:
        lower = [(x, y + opening * (1 - u * u)) for (x, y), u in zip(upper, xs)]
        draw.polygon(upper + lower[::-1], fill=(70, 15, 20), outline=lips)
        draw.line(upper, fill=lips, width=line)
    else:
        draw.line(upper, fill=lips, width=line + 1)

    # Box-filter down to the output size, then a small head rotation (cheaper at the small size).
    img = img.reduce(_SUPERSAMPLE)
    img = img.rotate(rng.uniform(-4.0, 4.0), resample=Image.BILINEAR,
                     center=(cx / _SUPERSAMPLE, cy / _SUPERSAMPLE), fillcolor=background)

    # Global brightness/contrast and pixel noise.
    arr = np.asarray(img, dtype=np.float32)
    arr = (arr - 128.0) * rng.uniform(0.9, 1.1) + 128.0 + rng.uniform(-10, 10)
    arr += rng.normal(0.0, rng.uniform(1.0, 4.0), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def demo_targets(per_class: int) -> np.ndarray:
    """Labels of a demo split: ``per_class`` images per class, classes interleaved (0, 1, ..., 6, 0, ...)."""
    return np.arange(per_class * len(DEMO_CLASSES), dtype=np.int64) % len(DEMO_CLASSES)


class DemoFaceLoader:
    """Picklable ``loader(i) -> PIL.Image`` that draws image ``i`` of one demo split on demand.

    Image ``i`` uses a generator seeded by ``(seed, split, i)``, so it is the same in every worker,
    process and run, whatever order images are asked for.
    """

    def __init__(self, seed: int, split: str, size: int, targets: np.ndarray):
        if split not in DEMO_SPLITS:
            raise ValueError(f"demo split must be one of {list(DEMO_SPLITS)}, got {split!r}")
        self.seed, self.split, self.size = int(seed), split, int(size)
        self.targets = np.asarray(targets, dtype=np.int64)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, DEMO_SPLITS[self.split], int(index)])

    def __call__(self, index: int) -> Image.Image:
        return draw_face(int(self.targets[index]), self.rng(index), self.size)


def build_demo_dataset(data_cfg: "DataConfig", split: str, transform: Callable | None = None) -> FERDataset:
    """The demo split ``split`` ('train', 'val' or 'test') as a :class:`FERDataset`.

    Sizes come from ``data_cfg.demo_{split}_per_class``, pixels from ``data_cfg.img_size`` and
    ``data_cfg.split_seed``. Paths look like ``'demo:train/000123'``. The returned dataset has
    ``synthetic = True``. Images are drawn lazily; ``registry.build_dataset`` caches them when
    ``data_cfg.cache_in_memory`` is set.
    """
    per_class = {"train": data_cfg.demo_train_per_class, "val": data_cfg.demo_val_per_class,
                 "test": data_cfg.demo_test_per_class}
    if split not in per_class:
        raise ValueError(f"demo split must be one of {list(per_class)}, got {split!r}")
    if per_class[split] < 1:
        raise ValueError(f"data.demo_{split}_per_class must be >= 1, got {per_class[split]}")
    targets = demo_targets(per_class[split])
    paths = [f"demo:{split}/{i:06d}" for i in range(len(targets))]
    loader = DemoFaceLoader(data_cfg.split_seed, split, data_cfg.img_size, targets)
    dataset = FERDataset(DEMO_CLASSES, targets, paths, loader=loader, transform=transform,
                         name="demo", split=split)
    dataset.synthetic = True  # drawn faces, not photographs
    return dataset


def save_demo_as_image_folder(root: str | os.PathLike, per_class: int = 10, img_size: int = 64,
                              seed: int = 0, splits: Sequence[str] = ("train", "val", "test")
                              ) -> dict[str, int]:
    """Write demo splits to disk as ``root/<split>/<class>/<index>.png``.

    The images are the same as the lazily drawn ones of :func:`build_demo_dataset` with
    ``split_seed=seed`` and ``img_size=img_size``. Returns the number of files written per split.
    """
    root = Path(root)
    targets = demo_targets(per_class)
    written = {}
    for split in splits:
        loader = DemoFaceLoader(seed, split, img_size, targets)
        for name in DEMO_CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(targets):
            loader(i).save(root / split / DEMO_CLASSES[label] / f"{i:06d}.png")
        written[split] = len(targets)
    return written
