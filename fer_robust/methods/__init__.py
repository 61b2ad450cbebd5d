"""Training methods: this package's staged system and the peers it is compared with.

``method.name`` picks one (:mod:`fer_robust.methods.base` says what a method adds to the
trainer's single training step):

- ``staged`` (default): DR-FER + ARM in stages, or the plain baseline (``model.arch=baseline``);
- ``scn``: Self-Cure Network (Wang et al., CVPR 2020), :mod:`fer_robust.methods.scn`;
- ``eac``: Erasing Attention Consistency (Zhang et al., ECCV 2022), :mod:`fer_robust.methods.eac`;
- ``gce``: generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018), :mod:`fer_robust.methods.gce`;
- ``votes``: the baseline trained on FERPlus's vote distributions (the noise benchmark's reference
  for relabelling), :mod:`fer_robust.methods.votes`.

Importing this package registers them all.
"""
from fer_robust.methods.base import (METHODS, Method, StagedMethod, build_method, get_method,
                                     list_methods, register_method)
from fer_robust.methods.scn import SCNMethod  # noqa: E402  (registers 'scn')
from fer_robust.methods.eac import EACMethod  # noqa: E402  (registers 'eac')
from fer_robust.methods.gce import GCEMethod  # noqa: E402  (registers 'gce')
from fer_robust.methods.votes import VotesMethod  # noqa: E402  (registers 'votes')

__all__ = ["METHODS", "Method", "StagedMethod", "SCNMethod", "EACMethod", "GCEMethod",
           "VotesMethod", "build_method", "get_method", "list_methods", "register_method"]
