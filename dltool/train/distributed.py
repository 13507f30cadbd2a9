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
- CPU ranks of the console script are forked after the data, model and optimizer were built once in the
  launching process (prepare_once): they start in well under a second instead of importing torch and
  building everything again each (start_method says when ranks are spawned instead).
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
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel

from dltool import plugins
from dltool.config.keys_data import VARIANTS as DATA_VARIANTS
from dltool.config.schema import TrainConfig, to_dict
from dltool.errors import ConfigError
from dltool.train import checkpoint as ckpt_io
from dltool.train import deferred
from dltool.train.callbacks import Callback, EpochReporter, FitState
from dltool.train.parts import threaded_here
from dltool.train.preempt import PREEMPTED, Preempted, submitit_signal
from dltool.train.run import Prepared, prepare, train
from dltool.train.sharding import (
    Rank,
    Weights,
    gather_all,
    gather_partial,
    shard_data,
    stop_together,
    weighted_allreduce,
)

log = logging.getLogger(__name__)

REDUCE_FIRST, DECIDE_LAST = -100, 100  # callback priorities: before every callback / after every callback
# built-in data sets whose loading may write files into a shared root (torchvision's downloads)
WRITING_DATA = frozenset(v.defaults.get("name", k) for k, v in DATA_VARIANTS.items() if "download" in v.keys)


class RankFailed(RuntimeError):
    """One sentence: which rank died, how, and how to continue."""


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
    backend = backend_and_devices(cfg, n)
    plugins.check_spawnable(to_dict(cfg))
    method = start_method(backend)
    ready = prepare_once(cfg, n) if method == "fork" else None  # built here once; every forked rank starts from it
    log.info("starting %d data-parallel ranks (%s, %s)", n, backend,
             "forked: data, model and optimizer built once here" if ready is not None else "spawned")
    sub = submitit_signal()  # the launcher forwards these to the ranks, which save and stop (train/preempt.py)
    forwarded = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1"] + ([sub.name] if sub is not None else [])
    logs = tempfile.mkdtemp(prefix="dltool_ranks_")  # the launcher's per-rank error files, removed afterwards
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.2, start_method=method, logs_specs=DefaultLogsSpecs(log_dir=logs),
                          signals_to_handle=",".join(forwarded))
    for name in ("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed.elastic.agent.server.api",
                 "torch.distributed.elastic.multiprocessing.api"):  # RankFailed / Preempted say it in one sentence
        logging.getLogger(name).setLevel(logging.CRITICAL)
    requeue = signal.getsignal(sub) if sub is not None else None  # submitit's handler, before elastic replaces it
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in forwarded}  # elastic leaves its own set
    try:
        results = elastic_launch(config, rank_entry)(cfg, str(run_dir), hook, show,
                                                     plugins.loaded_files() if method == "spawn" else None, ready)
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
        for name, handler in handlers.items():  # Ctrl-C: KeyboardInterrupt again in a Python caller, a sweep's next job
            if handler is not None:  # None: a handler not set from Python, nothing to put back
                signal.signal(getattr(signal, name), handler)
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


def start_method(backend: str) -> str:
    """CPU ranks are forked from the console script: they start with what it imported (torch, dltool: 3-6 s per rank
    when spawned) and what prepare_once built. Spawned instead: CUDA ranks (a process that asked CUDA for its
    devices cannot be forked for CUDA work), Python callers, and a process that already ran torch on several threads
    (a child forked after OpenMP's thread team existed hangs in its first parallel kernel)."""
    fork = backend == "gloo" and hasattr(os, "fork") and deferred.detaching() and not threaded_here()
    return "fork" if fork else "spawn"


def prepare_once(cfg: TrainConfig, n: int) -> Prepared:
    """The ranks' data, model and optimizer, built once in the launching process for n CPU ranks (what each rank would
    build itself: the same seeds), on one thread so that no OpenMP team exists when the ranks are forked."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return prepare(rank_config(replace(cfg, trainer=replace(cfg.trainer, threads=None)), torch.device("cpu"), n))
    finally:
        torch.set_num_threads(threads)


def rank_config(cfg: TrainConfig, device: torch.device, world: int) -> TrainConfig:
    """The config a rank prepares: its device; the schedule counts global batches (batch_size x world) while each
    rank fits batch_size examples per step."""
    t = cfg.trainer
    return replace(cfg, trainer=replace(t, device=str(device), batch_size=t.batch_size * world))


def as_if_spawned() -> None:
    """A forked rank drops what it inherited from the launching process and a fresh rank would not have: the
    launcher's signal handlers (Ctrl-C is KeyboardInterrupt again), its log handlers (train.log is rank 0's,
    added below) and the console script's figures-after-exit (a rank draws its own before it returns)."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, submitit_signal()):
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    deferred.detach_at_exit(False)


@record  # a rank's exception reaches the launcher (ChildFailedError), so RankFailed can name it
def rank_entry(cfg: TrainConfig, run_dir: str, hook: tuple | None, show: bool,
               plugin_files: list[str] | None = None, prepared: Prepared | None = None) -> dict | None:
    """What each rank runs (module level, so the launcher can pickle it for a spawned rank); the parent's --plugins
    files run again in a spawned rank (a fresh process; installed packages' entry points load by themselves).
    prepared: a forked rank's copy of what the launching process built (prepare_once)."""
    if prepared is not None:
        as_if_spawned()
    if int(os.environ.get("RANK", "0")) == 0:
        handler = logging.FileHandler(Path(run_dir) / "train.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    try:
        for f in plugin_files or []:
            plugins.load_file(f)
        return run_rank(cfg, Path(run_dir), hook, show, prepared)
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


def run_rank(cfg: TrainConfig, run_dir: Path, hook: tuple | None, show: bool,
             prepared: Prepared | None = None) -> dict | None:
    """Train this rank's shard (prepared: built by the launching process); rank 0 writes the run dir and returns the
    summary."""
    r = join(cfg)
    try:
        t = cfg.trainer
        if r.device.type == "cpu":  # the ranks share the machine's cores
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", r.world))
            torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // local_world))
        p = prepared if prepared is not None else prepare_in_turn(rank_config(cfg, r.device, r.world), r)
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
    """Every rank builds its data, model and optimizer at once; where loading may write shared files (a download of
    MNIST/CIFAR, a plug-in data set's own loader) rank 0 goes first and the others wait. A config mistake stops
    them all with rank 0's sentence (or the first rank's that has one)."""
    first = cfg.data.name in WRITING_DATA or plugins.get("datasets", cfg.data.name) is not None
    p, error = None, None
    if r.rank == 0 or not first:
        try:
            p = prepare(cfg)
        except ConfigError as ex:
            error = str(ex)
    errors: list = [None] * r.world
    dist.all_gather_object(errors, error)
    if any(e is not None for e in errors):
        raise ConfigError(next(e for e in errors if e is not None))
    p = p if p is not None else prepare(cfg)
    return p


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
