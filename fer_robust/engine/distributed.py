"""Every distributed concern in one place, on top of Hugging Face accelerate.

The trainer, the per-sample pass and the tools call these helpers instead of touching
``torch.distributed``: the same code then runs on this CPU, on one GPU, and under
``accelerate launch`` on many GPUs or nodes.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (DistributedDataParallelKwargs, ProjectConfiguration,
                               broadcast_object_list)

__all__ = ["build_accelerator", "gather_by_index", "broadcast_object", "run_on_main"]


def build_accelerator(mixed_precision: str = "no", grad_accum_steps: int = 1,
                      run_dir: str | Path | None = None, log_tensorboard: bool = False,
                      cpu: bool = False) -> Accelerator:
    """An :class:`Accelerator` for a run. Checkpoint naming is ours (see ``engine.checkpoint``), so
    accelerate's automatic naming stays off."""
    log_with = None
    if log_tensorboard:
        try:
            import tensorboard  # noqa: F401  (accelerate drops the tracker silently without it)
        except ImportError as e:
            raise RuntimeError("log_tensorboard=true needs the tensorboard package: "
                               "pip install 'fer_robust[tensorboard]'") from e
        log_with = "tensorboard"
    project = ProjectConfiguration(project_dir=str(run_dir) if run_dir else ".",
                                   logging_dir=str(Path(run_dir) / "tensorboard") if run_dir else None,
                                   automatic_checkpoint_naming=False)
    # A stage may leave parts of the model without gradients (the local head when local_ce has no
    # weight, the MIM decoder when mim is off); DDP must then be told to expect unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(mixed_precision=mixed_precision,
                              gradient_accumulation_steps=grad_accum_steps, project_config=project,
                              log_with=log_with, cpu=cpu, kwargs_handlers=[ddp])
    if mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate has no fp16 autocast or gradient scaler on the CPU and quietly runs fp32.
        warnings.warn("mixed_precision=fp16 needs a GPU: on the CPU this run trains in fp32 "
                      "(use mixed_precision=bf16 for CPU autocast)", UserWarning, stacklevel=2)
    return accelerator


@torch.no_grad()
def gather_by_index(accelerator: Accelerator, index: torch.Tensor, values: dict[str, torch.Tensor],
                    arrays: dict[str, np.ndarray], num_samples: int | None = None) -> np.ndarray:
    """Gather ``(index, value)`` pairs from every process and scatter them into ``arrays`` by index.

    Loaders sharded by accelerate pad the last batch with duplicates of earlier samples; a padded
    duplicate carries the same index and the same value, so writing it twice is harmless. After the
    pass every process holds identical arrays. An array missing from ``arrays`` is created with
    ``num_samples`` rows (floating values as float32). Returns the gathered indices.
    """
    index = accelerator.gather(index.to(accelerator.device)).cpu().numpy()
    for name, value in values.items():
        value = value.float() if value.is_floating_point() else value
        gathered = accelerator.gather(value.contiguous().to(accelerator.device)).cpu().numpy()
        if name not in arrays:
            if num_samples is None:
                raise ValueError(f"no array for {name!r}: pass num_samples to create it")
            arrays[name] = np.zeros((num_samples, *gathered.shape[1:]), gathered.dtype)
        arrays[name][index] = gathered
    return index


def broadcast_object(accelerator: Accelerator, obj: Any) -> Any:
    """Send a picklable object from the main process to all others (returns it everywhere)."""
    if accelerator.num_processes == 1:
        return obj
    box = [obj if accelerator.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]



def run_on_main(accelerator: Accelerator, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` once, on the main process, and return its (picklable) result on every process."""
    return broadcast_object(accelerator, fn() if accelerator.is_main_process else None)
