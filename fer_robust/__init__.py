"""fer_robust: facial expression recognition that learns from noisily labelled data.

DR-FER's two-branch network with MIM, class-dependent GMM split, distribution contrastive loss and
retrieval relabelling, with ARM's pooling stage and minimal random resampling, trained in stages on
Hugging Face accelerate. Entry points: ``tools/train.py``, ``tools/test.py``, ``tools/relabel.py``,
``tools/predict.py``, ``tools/export.py``, ``tools/data_summary.py``.
"""
__version__ = "0.1.0"
