"""Data-parallel training under `torchrun` (torch.distributed), and the single-process case as world size 1.

    torchrun --nproc-per-node 2 -m training.train --config configs/default.yaml train.num_threads=1

`torchrun` sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; without them (plain `tweetguard train`) this
module is a no-op. Every rank builds the same epoch plan (a pure function of seed and epoch); an optimizer step
takes `world * grad_accum` consecutive micro-batches of it, rank r the r-th of each group of `world`, and the
gradients are averaged over ranks: one step of W ranks equals one step of a single process with
`grad_accum * W` (same batches, same update). Rank 0 alone validates, checkpoints, logs to MLflow and builds and
registers the artifact; the others follow its decisions (stop, resume state) through broadcasts.

Backend gloo on CPU, NCCL on CUDA (training.fit.device: each rank on cuda:<LOCAL_RANK>). Multi-node: run the same torchrun command on every node with
`--nnodes N --node-rank i --rdzv-endpoint host:port`; `train.output_dir` must be a shared filesystem only for
`--resume` on another machine than rank 0's (rank 0 reads the checkpoint and broadcasts it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

T = TypeVar("T")
# Validation and calibration run on rank 0 while the other ranks wait in a collective: allow for it.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (any picklable object)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on rank 0; its result, or its exception re-raised, on every rank."""
        if not self.enabled:
            return fn(*args)
        result, error = None, None
        if self.main:
            try:
                result = fn(*args)
            except Exception as e:  # noqa: BLE001 - handed to every rank, then raised
                error = e
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def gather(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def average_gradients(self, model: torch.nn.Module | Sequence[torch.nn.Module], loss: float) -> float:
        """Average every parameter's gradient (and the loss) over ranks in one all-reduce; returns the mean loss.
        `model` may be several modules trained together (the model and its source terms, training.fit.loop)."""
        if not self.enabled:
            return loss
        params = [p for m in _modules(model) for p in m.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # a parameter unused in this batch still takes part in the reduction
                p.grad = torch.zeros_like(p)
        grad = params[0].grad
        flat = torch.cat([p.grad.reshape(-1) for p in params]
                         + [torch.tensor([loss], dtype=grad.dtype, device=grad.device)])
        torch.distributed.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n
        return float(flat[-1])

    def sync_parameters(self, model: torch.nn.Module | Sequence[torch.nn.Module]) -> None:
        """Rank 0's weights on every rank (the new head is initialized randomly on each)."""
        if self.enabled:
            for m in _modules(model):
                for tensor in list(m.parameters()) + list(m.buffers()):
                    torch.distributed.broadcast(tensor.data, src=0)

    def shutdown(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _modules(model: torch.nn.Module | Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    return [model] if isinstance(model, torch.nn.Module) else list(model)


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK; 0 without torchrun): its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_world(backend: str = "gloo") -> World:
    """World of this process: from torchrun's env (joins the process group), else a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
    return World(rank=torch.distributed.get_rank(), size=torch.distributed.get_world_size())
