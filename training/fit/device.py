"""Where training runs and at what precision: CPU (this project's machines) or a CUDA GPU.

`resolve_accel(train_cfg, local_rank)` -> `Accel`:
- cpu: fp32, or bf16 autocast with `train.bf16` (pays only on AMX / AVX512-BF16 CPUs); tensors stay where they
  are built, so CPU training is exactly what it was before GPUs were wired up (the exact-resume and data-parallel
  tests pin that).
- cuda (`train.device: cuda`, or `auto` when torch sees a GPU): the model and batches on `cuda:<LOCAL_RANK>`,
  batches copied from pinned memory without blocking; with `train.amp` (default) bf16 autocast where the GPU
  supports it, else fp16 autocast with a gradient scaler (its state is checkpointed); torchrun's backend is NCCL.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from training.config import TrainConfig


@dataclass(frozen=True)
class Accel:
    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: fp32
    grad_scaler: bool = False  # fp16 autocast needs loss scaling; bf16 and fp32 do not

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def backend(self) -> str:
        """torch.distributed backend for this device."""
        return "nccl" if self.cuda else "gloo"

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                              enabled=self.autocast_dtype is not None)

    def to(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A collated batch on this device (CPU: the same tensors)."""
        if not self.cuda:
            return batch
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler("cuda") if self.grad_scaler else None


CPU = Accel(torch.device("cpu"))


def resolve_accel(cfg: TrainConfig, local_rank: int = 0) -> Accel:
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return Accel(torch.device("cpu"), torch.bfloat16 if cfg.bf16 else None)
    if not torch.cuda.is_available():
        raise ValueError(f"train.device=cuda, but torch {torch.__version__} sees no CUDA GPU "
                         f"(built for CUDA {torch.version.cuda}); use train.device=auto or cpu")
    cuda = torch.device("cuda", local_rank)
    torch.cuda.set_device(cuda)  # NCCL collectives and the object broadcasts use the current device
    if not cfg.amp:
        return Accel(cuda)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Accel(cuda, dtype, grad_scaler=dtype == torch.float16)
