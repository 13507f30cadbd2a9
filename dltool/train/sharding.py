"""How data-parallel ranks share the work: this rank's part of each global batch (in-memory tensors, memory-mapped
rows, image files), gradients weighted by each rank's share, and the collectives the loop calls (gather the
validation outputs, agree on a stop, gather a cut epoch's sums). Used by dltool.train.distributed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from dltool.data.datasets.arrays import ArraySplit
from dltool.data.normalize import apply_norm
from dltool.data.splits import Batch, DataBundle, Split, TensorSplit


@dataclass
class Rank:
    rank: int
    world: int
    local_rank: int
    device: torch.device


class Weights:
    """Each rank's share of the current global batch (for the gradient average) and of the epoch (metrics)."""

    def __init__(self, world: int) -> None:
        self.world, self.step, self.train_seen, self.val_seen = world, 1.0, 0, 0


def weighted_allreduce(weights: Weights, bucket):  # no annotations: DDP checks them as objects, not strings
    """DDP comm hook: sum over ranks of (share x local mean gradient) = the global batch's mean gradient.

    bucket: dist.GradBucket; returns a torch.futures.Future of the reduced bucket.
    """
    tensor = bucket.buffer().mul_(weights.step / weights.world)
    return dist.all_reduce(tensor, async_op=True).get_future().then(lambda f: f.value()[0])


def gather_all(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every rank's rows of t (different counts allowed), concatenated in rank order, on every rank (CPU)."""
    world = dist.get_world_size()
    n = torch.tensor([len(t)], device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(int(k) for k in sizes))
    padded = torch.zeros((most, *t.shape[1:]), dtype=t.dtype, device=device)
    padded[:len(t)] = t.to(device)
    outs = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(outs, padded)
    return torch.cat([o[:int(k)] for o, k in zip(outs, sizes)]).cpu()


def stop_together(device: torch.device):
    """Setup.agree: after each optimizer step every rank learns whether any rank got a preemption signal or ran out
    of trainer.max_time, so all stop at the same step (one 2-element all-reduce per step)."""
    def agree(mine: list[bool]) -> list[bool]:
        flags = torch.tensor([1.0 if f else 0.0 for f in mine], device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return [bool(f) for f in flags.tolist()]

    return agree


def gather_partial(world: int):
    """Setup.gather: a cut epoch's running sums of every rank (rank r's at ranks[r]), so each continues its own."""
    def gather(partial: dict) -> dict:
        mine = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in partial.items()}
        ranks: list = [None] * world
        dist.all_gather_object(ranks, mine)
        return {"batches": partial["batches"], "ranks": ranks}

    return gather


def shard_data(data: DataBundle, r: Rank, weights: Weights, seed: int) -> DataBundle:
    rows = (TensorSplit, ArraySplit)  # in memory, or memory-mapped rows: every N-th example of a global batch
    if isinstance(data.train, rows):
        train: Split = ShardedTensors(data.train, r, weights)
    else:
        train = ShardedFolder(data.train, r, weights, seed)
    return replace(data, train=train, val=ShardedTensors(data.val, r, weights, val=True)
                   if isinstance(data.val, rows) else data.val)


def synced(generator: torch.Generator) -> torch.Generator:
    """Every rank continues from rank 0's generator state (augmentation may have used it unevenly)."""
    state = [generator.get_state()]
    dist.broadcast_object_list(state, src=0)
    generator.set_state(state[0])
    return generator


class ShardedTensors:
    """This rank's share of an in-memory split: global batch i is order[i*B*W:(i+1)*B*W], rank r takes [r::W]."""

    def __init__(self, inner: TensorSplit | ArraySplit, r: Rank, weights: Weights, val: bool = False) -> None:
        self.inner, self.r, self.weights, self.val = inner, r, weights, val
        self.x, self.y = (inner.x if isinstance(inner, TensorSplit) else ArrayRows(inner)), inner.y

    def __len__(self) -> int:
        return len(self.inner)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.inner) // (batch_size * self.r.world))

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        n, w = len(self.inner), self.r.world
        if generator is None:  # evaluation: rank r takes every w-th example, in order
            idx = torch.arange(self.r.rank, n, w, device=self.inner.y.device)
            self.weights.val_seen = len(idx)
            for i in range(0, len(idx), batch_size):
                yield self.x[idx[i:i + batch_size]], self.y[idx[i:i + batch_size]]
            return
        order = self.inner.order(synced(generator)).to(self.inner.y.device)
        self.weights.train_seen = 0
        for i in range(0, n, batch_size * w):
            idx = order[i:i + batch_size * w]  # the global batch, as one process with batch_size x world sees it
            mine = idx[self.r.rank::w]
            self.weights.step = len(mine) * w / len(idx)
            if len(mine) == 0:  # a last batch smaller than the world: take part with weight 0
                mine, self.weights.step = idx[:1], 0.0
            self.weights.train_seen += len(mine)
            yield self.x[mine], self.y[mine]


class ArrayRows:
    """`x[idx]` of a memory-mapped ArraySplit (data larger than data.memory_cap_mb): the rows read from the file
    and normalized, so ShardedTensors shards it exactly as an in-memory split."""

    def __init__(self, split: ArraySplit) -> None:
        self.split = split

    def __getitem__(self, pick: torch.Tensor) -> torch.Tensor:
        s = self.split
        x = torch.from_numpy(np.asarray(s.x[s.idx[pick.cpu()].numpy()], dtype=np.float32))  # (B, ...)
        return apply_norm(x, s.norm)


class ShardedFolder:
    """Folder data: a DistributedSampler over the image files, reseeded each epoch from the shared generator."""

    def __init__(self, inner: Any, r: Rank, weights: Weights, seed: int) -> None:
        self.inner, self.r, self.weights = inner, r, weights
        self.sampler = DistributedSampler(inner.dataset, num_replicas=r.world, rank=r.rank, shuffle=True, seed=seed)
        self.loaders: dict[int, DataLoader] = {}

    def __len__(self) -> int:
        return len(self.inner)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.sampler) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        if generator is None:
            yield from self.inner.batches(batch_size)
            return
        self.sampler.set_epoch(int(torch.randint(2**31 - 1, (1,), generator=synced(generator))))
        if batch_size not in self.loaders:
            self.loaders[batch_size] = DataLoader(self.inner.dataset, batch_size=batch_size, sampler=self.sampler,
                                                  num_workers=self.inner.workers,
                                                  persistent_workers=self.inner.workers > 0)
        self.weights.step, self.weights.train_seen = 1.0, 0  # the sampler pads: every rank has equal shares
        for x, y in self.loaders[batch_size]:
            self.weights.train_seen += len(y)
            yield apply_norm(x, self.inner.norm), y  # x: (N, C, H, W)
