"""The pass teacher: an exponential moving average of the model's weights that the robust stages'
per-sample pass reads instead of the model itself (``robust.teacher_ema``).

The split and the relabelling read one eval-mode pass of the model before every robust epoch. A
single model's predictions swing from epoch to epoch (the benchmark's validation accuracy moves by
2-4 points between robust epochs), and each decision is trained on and fed back into the next
one. An average of the weights over the last few hundred updates (a mean teacher, Tarvainen &
Valpola 2017; timm's :class:`~timm.utils.ModelEmaV3` does the averaging, parameters and buffers
alike) predicts more steadily and usually more accurately, and it moves slower than the model that
trains on its decisions. Neither DR-FER nor ARM uses one.

What we chose (each a config value or written here):

- ``robust.teacher_ema`` is the per-update decay (0 = off: the pass reads the model); 0.99 spans
  about 100 updates, under two epochs of the benchmark recipe.
- The teacher starts as a copy of the model at the first robust epoch and is updated after every
  optimiser update of the robust epochs only, so the warm-up is the same with or without it and a
  branch from the end of the warm-up (:mod:`fer_robust.engine.branching`) may switch it on.
- Only the pass reads it: validation, the best-model choice and the saved models are the trained
  model's, so the benchmark compares trained models alike.
- It is kept in float32 and saved with every checkpoint (``teacher.*`` in the trainer state), so
  ``--resume`` continues exactly and ``tools/relabel.py`` runs the pass training ran.
"""
from __future__ import annotations

import torch
from timm.utils import ModelEmaV3

__all__ = ["PassTeacher", "TEACHER_PREFIX"]

#: Prefix of the teacher's tensors in a checkpoint's trainer state.
TEACHER_PREFIX = "teacher."


class PassTeacher:
    """A moving average of ``model``'s weights, started on demand.

    Args:
        decay: the per-update decay (``robust.teacher_ema``), in (0, 1).
    """

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the teacher's decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self._ema: ModelEmaV3 | None = None

    @property
    def started(self) -> bool:
        return self._ema is not None

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model (eval mode), for the per-sample pass."""
        if self._ema is None:
            raise RuntimeError("the pass teacher has not started")
        return self._ema.module

    def start(self, model: torch.nn.Module) -> None:
        """Begin as a copy of ``model`` (unwrapped), unless already started or restored."""
        if self._ema is None:
            self._ema = ModelEmaV3(model, decay=self.decay, dtype=torch.float32)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One averaging step towards ``model`` (unwrapped); after an optimiser update."""
        self.module  # raises when not started
        self._ema.update(model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers (empty before the start)."""
        if self._ema is None:
            return {}
        return {k: v.detach().clone() for k, v in self._ema.module.state_dict().items()}

    def load_state_dict(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict` (nothing to restore leaves it unstarted); ``model``
        gives the architecture and the device."""
        if not state:
            self._ema = None
            return
        self._ema = ModelEmaV3(model, decay=self.decay, dtype=torch.float32)
        self._ema.module.load_state_dict(state)
