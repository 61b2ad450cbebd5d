"""EAC: Erasing Attention Consistency (Zhang, Wang, Ling & Deng, "Learn From All: Erasing Attention
Consistency for Noisy Label Facial Expression Recognition", ECCV 2022).

A network that memorises a noisy label does so by attending to a part of the face that fits the
wrong class. EAC keeps the attention whole and symmetric instead: each training image is randomly
erased, then flipped horizontally, and the class activation maps (CAMs) of the image and of its
flip, the latter flipped back, must agree (MSE), beside cross-entropy on the image::

    x  = erase(image)                          (B, 3, H, W)
    M  = CAM(x),  M' = CAM(flip(x))            (B, K, h, w)   K = classes
    loss = CE(logits(x), y) + lam * mean((M - flip(M'))^2)

A CAM is the classifier applied at every cell of the final feature map, without its bias
(:meth:`~fer_robust.models.network.BaselineFER.class_activation_maps`); all K maps enter the loss.

What we followed (the authors' ``src/main.py``, ``model.py``, ``loss.py`` and ``utils.py``):
- CE on the (erased, unflipped) image only; the flipped view enters the consistency term alone.
- The maps of every class from the last feature map and the classifier weights, which are
  detached (``Variable(params[-2].data)``): the consistency loss trains the features only.
- The flipped view's map flipped back along the width (their ``grid_sample`` on a flipped grid
  with ``align_corners=True`` is an exact flip), then ``F.mse_loss`` (the mean over B, K, h, w).
- lam = 5 (``--lam``): here the stage's ``loss_weights.cam_consistency``
  (``configs/eac_rafdb.yaml``).
- Random erasing as torchvision's ``RandomErasing(scale=(0.02, 0.25))`` after normalisation: with
  probability 0.5 one box of 2-25% of the image, aspect ratio in (0.3, 3.3), set to 0.

What we chose (each a config value under ``method.eac``):
- ``erasing_prob``/``erasing_scale``/``erasing_ratio``: the erasing is part of the method and runs
  in the step, on the batch, before the flip, so both views lose the same box (the paper's figure
  and the authors' clean-label path). Their noisy-label data path transforms the image and its
  flip separately, so there the two views are erased independently. Keeping it in the method
  leaves ``data.augment`` as the baseline's, so in the benchmark only the method differs.
- ``joint_forward`` (true): one forward pass over the batch and its flip together; BatchNorm then
  normalises both views with the same statistics (the authors run two passes: ``false``).
- ``cam_head_grad`` (false, as the authors): whether the consistency loss reaches the classifier.
- Not reproduced: the authors' data path also adds Gaussian pixel noise to half the images, and
  draws no other augmentation; ``data.augment`` says what a run draws.
- The network is the single-branch baseline (``model.arch=baseline``: timm backbone, global
  average pooling, linear), the authors' ResNet-50 being ``model.backbone=resnet50``.
- Evaluation is the plain network on the plain image (no erasing, no flip), as theirs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fer_robust.config import Config, ConfigError
from fer_robust.methods.base import Method, register_method

__all__ = ["random_erase", "flip_consistency_loss", "EACMethod"]


def random_erase(images: torch.Tensor, prob: float, scale: tuple[float, float],
                 ratio: tuple[float, float], max_tries: int = 10) -> torch.Tensor:
    """A copy of ``images`` ``(B, 3, H, W)`` in which each image, with probability ``prob``, has
    one box set to 0 (torchvision's ``RandomErasing`` with ``value=0``, drawn per image from the
    torch RNG): the box covers a share in ``scale`` of the image with aspect ratio (h / w) in
    ``ratio``, log-uniformly; an image for which no box fits in ``max_tries`` draws is left as
    it is."""
    out = images.clone()
    b, _, height, width = images.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for n in torch.nonzero(torch.rand(b) < prob).flatten().tolist():
        for _ in range(max_tries):
            erase_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
            h = int(round(math.sqrt(erase_area * aspect)))
            w = int(round(math.sqrt(erase_area / aspect)))
            if h < height and w < width:
                i = int(torch.randint(0, height - h + 1, (1,)).item())
                j = int(torch.randint(0, width - w + 1, (1,)).item())
                out[n, :, i:i + h, j:j + w] = 0.0
                break
    return out


def flip_consistency_loss(cam: torch.Tensor, cam_of_flipped: torch.Tensor) -> torch.Tensor:
    """EAC's attention consistency: ``mean((cam - flip_w(cam_of_flipped))^2)``.

    Args:
        cam: ``(B, K, h, w)`` maps of the images.
        cam_of_flipped: ``(B, K, h, w)`` maps of the horizontally flipped images; flipped back
            along the width before the comparison.

    Zero when the network's maps are flip-equivariant (a map of a flipped face is the flipped
    map); computed in float32.
    """
    return F.mse_loss(cam.float(), torch.flip(cam_of_flipped.float(), dims=[-1]))


@register_method("eac")
class EACMethod(Method):
    """Erasing Attention Consistency on the baseline network (see the module docstring)."""
    loss_terms = ("ce", "cam_consistency")
    archs = ("baseline",)
    stage_kinds = ("warmup",)

    def __init__(self, cfg: Config, num_samples: int, num_classes: int) -> None:
        super().__init__(cfg, num_samples, num_classes)
        self.eac = cfg.method.eac

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        eac = cfg.method.eac
        if not 0.0 <= eac.erasing_prob <= 1.0:
            raise ConfigError("'method.eac.erasing_prob' must be in [0, 1], got "
                              f"{eac.erasing_prob}")
        if not 0.0 < eac.erasing_scale[0] <= eac.erasing_scale[1] < 1.0:
            raise ConfigError("'method.eac.erasing_scale' must be (low, high) with 0 < low <= high "
                              f"< 1, got {list(eac.erasing_scale)}")
        if not 0.0 < eac.erasing_ratio[0] <= eac.erasing_ratio[1]:
            raise ConfigError("'method.eac.erasing_ratio' must be (low, high) with "
                              f"0 < low <= high, got {list(eac.erasing_ratio)}")

    def forward(self, model: torch.nn.Module, images: torch.Tensor, mim: bool) -> dict:
        """The erased batch's outputs (``logits``, ``embedding``, ``cam``) and ``cam_flipped``, the
        maps of its horizontal flip (``(B, K, h, w)``, not yet flipped back)."""
        eac = self.eac
        erased = random_erase(images, eac.erasing_prob, tuple(eac.erasing_scale),
                              tuple(eac.erasing_ratio))
        flipped = torch.flip(erased, dims=[3])
        kwargs = dict(cam=True, cam_head_grad=eac.cam_head_grad)
        if eac.joint_forward:
            both = model(torch.cat([erased, flipped]), **kwargs)
            b = images.shape[0]
            out = {k: v[:b] for k, v in both.items()}
            out["cam_flipped"] = both["cam"][b:]
        else:
            out = model(erased, **kwargs)
            out["cam_flipped"] = model(flipped, **kwargs)["cam"]
        return out

    def own_loss_terms(self, out: dict, labels: torch.Tensor, stage,
                       index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not stage.weight("cam_consistency"):
            return {}
        return {"cam_consistency": flip_consistency_loss(out["cam"], out["cam_flipped"])}
