"""How the trainer runs across processes: one object per strategy.

    parallel = make_parallel(cfg, dist, policy)     # SingleProcess | DDP | FSDP
    parallel.model                   what forwards and backwards run through [B, T] -> [B, T, H]
    parallel.micro_batches(micro)    the batch's micro-batches as every rank runs them (None: an empty one)
    parallel.backward(last)          the context of one micro-batch's backward (gradient sync on the last)
    parallel.lm_head_weight(policy)  the LM-head weight [V, H] the fused loss reads
    parallel.grad_norm(norm)         clip_grad_norm_'s total as a float
    parallel.full_policy(step)       a policy with whole weights (rollouts, evaluation, sync, saving)
    parallel.forwards_agree(flag)    whether an optional forward pass runs (every rank, or none)
    parallel.save(...) / .load(...)  checkpoints

Single process and DDP keep whole weights on every rank; DDP averages the
gradients in the last micro-batch's backward. FSDP2 (train/fsdp.py) shards
parameters, gradients and optimizer state; every forward and backward of a
sharded module is a collective, so each rank runs the same number of them
(padding micro-batches with empty ones), and rollouts read an unsharded copy
refreshed at most once per step (docs/design.md section 6.7).
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

from . import checkpoint as ckpt
from . import fsdp
from .distributed import Dist
from .reference_model import frozen_copy

OPTIMIZER_DIR = "optimizer"  # in a checkpoint: the FSDP-sharded optimizer state


class SingleProcess:
    """One process, or the defaults the other strategies share."""

    sharded = False

    def __init__(self, dist: Dist, policy):
        self.dist, self.policy = dist, policy
        self.model = policy.decoder

    def prepare_reference(self, ref):
        """The reference model (beta > 0) as this strategy keeps it."""
        return ref

    def micro_batches(self, micro: list[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        """This rank's micro-batches (row indices [b] each, from the batch's layout) as every
        rank must run them (None: an empty one)."""
        return micro

    def backward(self, last: bool):
        """The context one micro-batch's forward and backward run in."""
        return contextlib.nullcontext()

    def lm_head_weight(self, policy) -> torch.Tensor:
        return policy.lm_head_weight

    def grad_norm(self, norm) -> float:
        return float(norm)

    def full_policy(self, step: int):
        return self.policy

    def forwards_agree(self, flag: bool) -> bool:
        return flag

    def empty_backward(self) -> None:
        """A zero-loss backward through the model and the LM head: every parameter gets a zero
        gradient and this rank joins the gradient collectives of a step it has nothing to train on."""
        hidden = self.model(torch.zeros(1, 1, dtype=torch.int64, device=self.policy.device))  # [1, 1, H]
        (hidden.sum() * 0.0 + self.lm_head_weight(self.policy).sum() * 0.0).backward()

    # ------------------------------------------------------------------ checkpoints
    def save(self, output: str, step: int, optimizer, state: dict, keep: int) -> Optional[str]:
        """Writes OUTPUT/checkpoint-STEP (rank 0); every rank calls it."""
        path = None
        if self.dist.main:
            path = ckpt.save_checkpoint(output, step, self.policy, {**state, "optimizer": optimizer.state_dict()},
                                        keep)
        self._barrier()
        return path

    def load(self, path: str, saved_policy, optimizer, state: dict) -> None:
        """Puts checkpoint `path` (its model loaded as saved_policy, its trainer state) in place."""
        self._check_layout(path)
        self.policy.decoder.load_state_dict(saved_policy.decoder.state_dict())
        optimizer.load_state_dict(state["optimizer"])

    def _check_layout(self, path: str) -> None:
        sharded = os.path.isdir(os.path.join(path, OPTIMIZER_DIR))
        if sharded != self.sharded:
            raise ValueError(f"{path}: its optimizer state is {'sharded (FSDP under torchrun)' if sharded else 'whole'}; "
                             f"resume it with parallel = '{'fsdp' if sharded else 'ddp'}'"
                             + (" and the same torchrun" if sharded else ""))

    def _barrier(self) -> None:
        if self.dist.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Ends the run's process group (a no-op in one process). DDP's reducer holds a reference
        to the group, so the wrapper goes first: otherwise the group outlives
        destroy_process_group and its Gloo threads are torn down during interpreter exit, which
        aborted a rank in ~1 run of 30 (docs/design.md section 6.7)."""
        import gc
        self.model = self.policy.decoder
        gc.collect()
        self.dist.close()


class DDP(SingleProcess):
    """Whole weights on every rank; gradients averaged over ranks in the last backward of a step."""

    def __init__(self, dist: Dist, policy):
        super().__init__(dist, policy)
        from torch.nn.parallel import DistributedDataParallel
        self.model = DistributedDataParallel(policy.decoder)

    def micro_batches(self, micro: list[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        # a rank without sequences still joins the all-reduce: one empty micro-batch
        return micro or [None]

    def backward(self, last: bool):
        return contextlib.nullcontext() if last else self.model.no_sync()


class FSDP(SingleProcess):
    """FSDP2: each rank holds 1/world of every parameter, gradient and AdamW moment."""

    sharded = True

    def __init__(self, dist: Dist, policy):
        super().__init__(dist, policy)
        self.full = frozen_copy(policy)  # an unsharded copy for rollouts, evaluation and saving
        self._full_step = -1             # the step whose weights it holds (one all-gather per step)
        fsdp.shard(policy.decoder, policy.device)

    def prepare_reference(self, ref):
        if not getattr(ref, "shares_policy_weights", False):  # LoRA's is the (sharded) policy itself
            fsdp.shard(ref.decoder, self.policy.device)
        return ref

    def micro_batches(self, micro: list[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        # padded with empty ones up to the largest count of any rank: equal collectives everywhere
        most = int(max(self.dist.all_gather_floats([float(len(micro))])))
        return micro + [None] * (most - len(micro))

    def backward(self, last: bool):
        self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def lm_head_weight(self, policy) -> torch.Tensor:
        return fsdp.gathered_lm_head(policy.lm_head_weight)

    def grad_norm(self, norm) -> float:
        return fsdp.grad_norm_value(norm)

    def forwards_agree(self, flag: bool) -> bool:  # forwards are collectives: all ranks run it, or none
        return self.dist.sum([float(flag)])[0] > 0

    def full_policy(self, step: int):
        """The unsharded copy with this step's weights: an all-gather, so every rank calls it. The
        weights change only in the update, before the step count moves on."""
        if self._full_step != step:
            state = fsdp.full_state_dict(self.policy.decoder)
            with torch.no_grad():
                for name, t in self.full.decoder.state_dict().items():
                    t.copy_(state[name])
            self._full_step = step
        return self.full

    def save(self, output: str, step: int, optimizer, state: dict, keep: int) -> Optional[str]:
        """The model gathered to rank 0 in HF layout; each rank's optimizer shard beside it."""
        full, path = self.full_policy(step), None
        tmp = ckpt.temp_path(output, step)
        if self.dist.main:
            ckpt.begin_checkpoint(output, step, full)
        torch.distributed.barrier()
        fsdp.save_optimizer(self.policy.decoder, optimizer, os.path.join(tmp, OPTIMIZER_DIR))
        if self.dist.main:
            path = ckpt.finish_checkpoint(output, step, tmp, state, keep)
        self._barrier()
        return path

    def load(self, path: str, saved_policy, optimizer, state: dict) -> None:
        self._check_layout(path)
        fsdp.load_full_state_dict(self.policy.decoder, saved_policy.decoder.state_dict())
        fsdp.load_optimizer(self.policy.decoder, optimizer, os.path.join(path, OPTIMIZER_DIR))


def make_parallel(cfg, dist: Dist, policy) -> SingleProcess:
    """The strategy of config field `parallel` under torchrun (one process: SingleProcess)."""
    if dist.world == 1:
        return SingleProcess(dist, policy)
    return FSDP(dist, policy) if cfg.parallel == "fsdp" else DDP(dist, policy)
