"""torchrun support: process group from the environment, rank's share of a
step's prompts, sums across ranks. One process without torchrun is world 1."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Dist:
    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        if self.world > 1 and device == "cuda":
            torch.cuda.set_device(self.local_rank)  # NCCL uses the current device
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend)
        self.device = f"cuda:{self.local_rank}" if device == "cuda" and self.world > 1 else device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> range:
        """This rank's contiguous share of n items (ranks differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (identity for world 1)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all(self, flag: bool) -> bool:
        """Whether flag holds on every rank."""
        return flag if self.world == 1 else self.sum([float(flag)])[0] == self.world

    def sum_named(self, *parts: dict[str, float]) -> list[dict[str, float]]:
        """`sum` of named values, several dicts in one collective: each dict
        with its sums over ranks (every rank passes the same names, in order)."""
        total = self.sum([v for d in parts for v in d.values()])
        out, i = [], 0
        for d in parts:
            out.append(dict(zip(d, total[i:i + len(d)])))
            i += len(d)
        return out

    def all_gather_floats(self, values: list[float]) -> list[float]:
        """Concatenation over ranks, in rank order (lengths may differ)."""
        if self.world == 1:
            return list(values)
        out = [None] * self.world
        dist.all_gather_object(out, list(values))
        return [v for part in out for v in part]

    def close(self):
        """Every rank reaches the end before any group is torn down."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
