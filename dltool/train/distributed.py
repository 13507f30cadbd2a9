"""Data-parallel training (DistributedDataParallel) through torch.distributed's own launcher.

`dltool train trainer.devices=N` starts N ranks with torch.distributed.launcher (the engine behind
torchrun): gloo on CPUs, NCCL on GPUs (one GPU per rank). A process started by an external torchrun
(RANK / WORLD_SIZE / LOCAL_RANK in its environment) is one rank itself.

- Every rank draws the same permutation each epoch (the shuffle generator is synced from rank 0) and
  takes its share of each global batch of batch_size x N examples (in-memory data), or a
  DistributedSampler shard (folder data). trainer.batch_size is per device.
- DDP averages gradients with a comm hook that weights each rank by its share of the batch, so a
  step equals one process's step on the whole global batch, also for an uneven last batch.
- Train and val metrics are summed over ranks (ReduceLogs); early stopping and pruning decisions
  are rank 0's, broadcast (Decisions), so no rank waits for a step the others never take.
- Only rank 0 writes the run dir and prints; it evaluates best.pt on the whole test split.
- A rank that dies ends the run: the launcher stops the other ranks and RankFailed says which one
  died and how to resume; a rank that never answers fails the others after trainer.dist_timeout s.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from dltool.config.schema import TrainConfig
from dltool.data.datasets.arrays import ArraySplit
from dltool.data.normalize import apply_norm
from dltool.data.splits import Batch, DataBundle, Split, TensorSplit
from dltool.errors import ConfigError
from dltool.train import checkpoint as ckpt_io
from dltool.train.callbacks import Callback, EpochReporter, FitState
from dltool.train.preempt import PREEMPTED, Preempted, submitit_signal
from dltool.train.run import Prepared, prepare, train

log = logging.getLogger(__name__)

REDUCE_FIRST, DECIDE_LAST = -100, 100  # callback priorities: before every callback / after every callback


class RankFailed(RuntimeError):
    """One sentence: which rank died, how, and how to continue."""


@dataclass
class Rank:
    rank: int
    world: int
    local_rank: int
    device: torch.device


def external() -> bool:
    """Started by torchrun (or another torch.distributed launcher, or as a SLURM task) with more than one rank."""
    slurm_ranks()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def slurm_ranks() -> None:
    """A SLURM job step with several tasks (submitit launcher, nodes x tasks_per_node): each task is one rank.

    Sets torch.distributed's env:// variables from SLURM's; rank 0 runs on the node that launched the step.
    """
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ["SLURM_NTASKS"],
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"),
                      LOCAL_WORLD_SIZE=str(int(os.environ["SLURM_NTASKS"]) // max(1, nodes)))
    os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "localhost"))
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 40000))


def rank_overrides() -> list[str]:
    """Hydra overrides for ranks > 0 of an external torchrun: no run dir, no log file (rank 0 writes)."""
    rank = int(os.environ.get("RANK", "0"))
    if not external() or rank == 0:
        return []
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"dltool_rank{rank}_{os.getpid()}"
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def backend_and_devices(cfg: TrainConfig, n: int) -> str:
    """'nccl' (one GPU per rank) or 'gloo' (CPU); a ConfigError when the machine cannot hold n ranks."""
    backend = pick_backend(cfg, n)
    if backend == "gloo" and cfg.model.sync_batchnorm:
        raise ConfigError("model.sync_batchnorm=true needs CUDA ranks (torch's SyncBatchNorm does not run on CPU); "
                          "set it to false for CPU processes.")
    return backend


def pick_backend(cfg: TrainConfig, n: int) -> str:
    want = cfg.trainer.device
    if want == "cpu":
        return "gloo"
    if want.startswith("cuda") or (want == "auto" and torch.cuda.is_available()):
        have = torch.cuda.device_count()
        if have < n and not external():
            raise ConfigError(f"trainer.devices={n} but this machine has {have} CUDA device(s); use at most {have}, "
                              f"or trainer.device=cpu for {n} CPU processes.")
        return "nccl"
    if want != "auto":
        raise ConfigError(f"trainer.devices={n} runs on CUDA or CPU; trainer.device={want!r} is neither "
                          f"(use auto, cuda or cpu).")
    return "gloo"


# --------------------------------------------------------------------------- the parent: start N ranks
def launch(cfg: TrainConfig, run_dir: Path, hook: tuple | None, show: bool) -> dict:
    """Start trainer.devices ranks on this machine, wait for them, return rank 0's summary."""
    n = cfg.trainer.devices
    backend_and_devices(cfg, n)
    sub = submitit_signal()  # the launcher forwards these to the ranks, which save and stop (train/preempt.py)
    forwarded = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1"] + ([sub.name] if sub is not None else [])
    logs = tempfile.mkdtemp(prefix="dltool_ranks_")  # the launcher's per-rank error files, removed afterwards
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.2, start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=logs),
                          signals_to_handle=",".join(forwarded))
    for name in ("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed.elastic.agent.server.api",
                 "torch.distributed.elastic.multiprocessing.api"):  # RankFailed / Preempted say it in one sentence
        logging.getLogger(name).setLevel(logging.CRITICAL)
    requeue = signal.getsignal(sub) if sub is not None else None  # submitit's handler, before elastic replaces it
    try:
        results = elastic_launch(config, rank_entry)(cfg, str(run_dir), hook, show)
    except ChildFailedError as ex:
        if all(f.exitcode == PREEMPTED for f in ex.failures.values()):  # the ranks were signalled directly
            raise Preempted(signal.SIGTERM, run_dir) from None
        raise RankFailed(death_sentence(ex, run_dir, n)) from None
    except SignalException as ex:  # the ranks got the signal from the launcher and stopped after saving
        if ex.sigval in (signal.SIGINT,):
            raise KeyboardInterrupt from None
        raise Preempted(ex.sigval, run_dir, requeue if ex.sigval == sub and callable(requeue) else None) from None
    finally:
        shutil.rmtree(logs, ignore_errors=True)  # no torchelastic_* folder left in the temp directory
    out = results[0]
    if isinstance(out, dict) and "config_error" in out:
        raise ConfigError(out["config_error"])
    return out


def death_sentence(ex: ChildFailedError, run_dir: Path, n: int) -> str:
    rank, failure = min(ex.failures.items(), key=lambda kv: kv[1].timestamp)  # the first to fail
    code = failure.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    message = failure.message if isinstance(failure.message, str) and failure.message.strip() else ""
    detail = f" ({message.strip().splitlines()[-1][:160]})" if message and "Signal" not in message else ""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    hint = f"; continue with: dltool train resume={run_dir} trainer.devices={n}" if last.exists() else ""
    return f"rank {rank} of {n} (pid {failure.pid}) {how}{detail}, so the other ranks were stopped{hint}"


@record  # a rank's exception reaches the launcher (ChildFailedError), so RankFailed can name it
def rank_entry(cfg: TrainConfig, run_dir: str, hook: tuple | None, show: bool) -> dict | None:
    """What each spawned rank runs (module level, so the launcher can pickle it)."""
    if int(os.environ.get("RANK", "0")) == 0:
        handler = logging.FileHandler(Path(run_dir) / "train.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    try:
        return run_rank(cfg, Path(run_dir), hook, show)
    except ConfigError as ex:
        return {"config_error": str(ex)}
    except Preempted:  # rank 0 wrote last.pt; every rank stopped at the same step. Exit now: a returned value
        sys.exit(PREEMPTED)  # waits for the launcher to read it, which a launcher shutting down never does


# --------------------------------------------------------------------------- one rank
def join(cfg: TrainConfig) -> Rank:
    """Join the process group described by the environment (set by the launcher)."""
    backend = backend_and_devices(cfg, int(os.environ["WORLD_SIZE"]))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=cfg.trainer.dist_timeout),
                            device_id=device if device.type == "cuda" else None)
    return Rank(dist.get_rank(), dist.get_world_size(), local, device)


def run_rank(cfg: TrainConfig, run_dir: Path, hook: tuple | None, show: bool) -> dict | None:
    """Train this rank's shard; rank 0 writes the run dir and returns the summary."""
    r = join(cfg)
    try:
        if cfg.trainer.threads is None and r.device.type == "cpu":  # the ranks share the machine's cores
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", r.world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        t = cfg.trainer
        # the schedule counts global batches (batch_size x world); each rank fits batch_size examples per step
        p = prepare_in_turn(replace(cfg, trainer=replace(t, device=str(r.device), batch_size=t.batch_size * r.world)),
                            r)
        weights = shard(p, r, cfg)
        callbacks: list[Callback] = [ReduceLogs(weights), Decisions()]
        if r.rank == 0 and hook is not None:
            from_hook = hook[0](*hook[1:])
            callbacks += [from_hook] if from_hook is not None else []
        reporter = EpochReporter(t.epochs, t.monitor, t.progress) if r.rank == 0 and show else None
        summary = train(cfg, run_dir, extra_callbacks=callbacks, reporter=reporter, prepared=p, writer=r.rank == 0)
        return summary if r.rank == 0 else None
    finally:
        dist.destroy_process_group()


def prepare_in_turn(cfg: TrainConfig, r: Rank) -> Prepared:
    """Rank 0 prepares first (a data set is downloaded once), then the others; a config mistake stops them all."""
    p, error = None, [None]
    if r.rank == 0:
        try:
            p = prepare(cfg)
        except ConfigError as ex:
            error = [str(ex)]
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise ConfigError(error[0])
    return p if p is not None else prepare(cfg)


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


def shard(p: Prepared, r: Rank, cfg: TrainConfig) -> Weights:
    """Wrap the model in DDP (SyncBatchNorm first when asked), shard train and val, keep test whole."""
    model = p.setup.model
    if cfg.model.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        p.setup.model = p.built.model = model
    weights = Weights(r.world)
    ddp = DistributedDataParallel(model, device_ids=[r.device.index] if r.device.type == "cuda" else None)
    ddp.register_comm_hook(weights, weighted_allreduce)
    p.setup.ddp = ddp
    p.setup.gather_outputs = functools.partial(gather_all, device=r.device)
    p.setup.agree, p.setup.gather, p.setup.rank = stop_together(r.device), gather_partial(r.world), r.rank
    torch.manual_seed(cfg.trainer.seed + r.rank)  # dropout differs between ranks; the weights came from rank 0
    p.data = shard_data(p.data, r, weights, cfg.trainer.seed)
    return weights


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


class ReduceLogs(Callback):
    """Before any other callback: train/val metrics become the all-rank means (weighted by examples seen)."""

    priority = REDUCE_FIRST

    def __init__(self, weights: Weights) -> None:
        self.w = weights

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        """Training sums are reduced here; validation metrics were computed on the gathered outputs already
        (data.val_fraction=0: no validation split, train metrics only)."""
        nt = float(self.w.train_seen)
        keys = [k for k in ("train_loss", "train_acc") if k in logs]
        t = torch.tensor([logs[k] * nt for k in keys] + [nt], dtype=torch.float64)
        dist.all_reduce(t)
        logs.update({k: (t[i] / t[-1]).item() for i, k in enumerate(keys)})
        self.gather_rng(state)

    def on_checkpoint(self, state: FitState) -> None:
        self.gather_rng(state)

    @staticmethod
    def gather_rng(state: FitState) -> None:
        """Every rank's own generators, for the checkpoints rank 0 writes next (a resume restores each rank's)."""
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, ckpt_io.local_rng_state())
        state.rank_rng = states


class Decisions(Callback):
    """After every callback: rank 0's stop decision (early stopping, divergence, pruning) for every rank."""

    priority = DECIDE_LAST

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        decision = [(state.stop, state.stop_reason, state.diverged)]
        dist.broadcast_object_list(decision, src=0)
        state.stop, state.stop_reason, state.diverged = decision[0]
