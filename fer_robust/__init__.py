"""fer_robust: facial expression recognition that learns from noisily labelled data.

DR-FER's two-branch network with MIM, class-dependent GMM split, distribution contrastive loss and
retrieval relabelling, with ARM's pooling stage and minimal random resampling, trained in stages on
Hugging Face accelerate. Entry points: ``tools/train.py``, ``tools/test.py``, ``tools/relabel.py``,
``tools/predict.py``, ``tools/export.py``, ``tools/data_summary.py``; from Python, :func:`load`::

    import fer_robust
    model = fer_robust.load("runs/rafdb")    # a run directory, a weights file or an exported .onnx
    model.predict(face_image)                 # class probabilities of one aligned face
    model.predict_photo(photo)                # every face found, with its box and probabilities

Importing the package loads nothing heavy; torch is imported when a PyTorch model is loaded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fer_robust.deploy.api import FERModel

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def load(path, device: str | None = None) -> "FERModel":
    """A trained model, ready to classify faces: see :func:`fer_robust.deploy.api.load`."""
    from fer_robust.deploy.api import load as load_model
    return load_model(path, device=device)
