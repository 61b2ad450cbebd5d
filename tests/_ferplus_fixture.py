"""A tiny dataset in the real FERPlus on-disk format, drawn from the demo faces."""
from pathlib import Path

import numpy as np

from fer_robust.data.demo import draw_face

# Demo expression index -> FERPlus class index (neutral, happiness, surprise, sadness, anger,
# disgust, fear, contempt).
DEMO_TO_FERPLUS = [0, 1, 3, 2, 4, 5, 6]


def write_ferplus_fixture(root: Path, per_class: dict[str, int], seed: int = 0) -> None:
    """FER+ layout: FER2013{Train,Valid}/label.csv (no header) + 48x48 grayscale PNGs.

    Every image has 7 votes for its class and 3 for the next class, so its vote distribution
    is (0.7, 0.3) and the majority protocol keeps it with its own class.
    """
    rng = np.random.default_rng(seed)
    for folder, n in per_class.items():
        out = root / folder
        out.mkdir(parents=True)
        rows = []
        for i in range(n * 7):
            demo_class = i % 7
            cls = DEMO_TO_FERPLUS[demo_class]
            name = f"fer{i:07d}.png"
            draw_face(demo_class, rng, 48).convert("L").save(out / name)
            votes = [0] * 10
            votes[cls] = 7
            votes[(cls + 1) % 7] = 3
            rows.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (out / "label.csv").write_text("\n".join(rows) + "\n")
