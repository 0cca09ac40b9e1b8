"""Plumbing, not a lesson: training in several processes at once, as torchrun starts them.

`torchrun --nproc_per_node N -m imagen_lib train ...` starts N processes (on each machine,
with --nnodes and a rendezvous for several machines), each told its place by environment
variables: RANK (0 to WORLD_SIZE - 1), WORLD_SIZE and LOCAL_RANK (its place on its machine,
which picks its GPU). A process started without them is alone (`Processes()`), and the
trainer runs exactly as it always did: each wrapper here gives back the network it is given.

How N processes train as one, the same steps as one process at the same batch size:
- Every process draws the same whole batch from the same per-stage generator (same seed,
  same state): the images, the captions, the timesteps and the noise of all `batch_size`
  samples, exactly as one process would. Drawing is cheap; the network is not: each process
  runs its network on its own block of batch_size / N rows, and gathers the others' outputs
  (`ShardedNetwork`), so every process computes the loss of the whole batch, the same number
  everywhere.
- Only its own rows carry gradients, so the processes' gradients add up to the one-process
  gradient: the networks are wrapped in DistributedDataParallel, told to add them
  (`add_up`) instead of averaging them, as it otherwise does.
- So every process takes the same optimiser step, keeps the same EMA weights and the same
  generator states: the result matches a one-process run up to float rounding, a checkpoint
  holds one set of generator states, and it resumes exactly with any number of processes.
- The first process (rank 0) writes: it holds the run folder's lock and writes the
  checkpoints and sample grids. The others meanwhile go on to the next step, whose first
  exchange waits for it.
- A process that ends early ends the run: torchrun stops the others with SIGTERM, which
  raises `ProcessesStopped` (an exchange with the lost process fails too: `ending`), and
  the command line says so in one line, with the checkpoint that is kept (saves are atomic).

Dropout would draw from torch's global generator, row by row of each process's block, so a
network with dropout trains validly but not exactly as one process would; no preset has any.
"""

# No `from __future__ import annotations`: DistributedDataParallel checks its hook's
# annotations as objects (`add_up`), and strings fail that check.
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from types import FrameType

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imagen_lib.plumbing.errors import Stopped

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun tells each process


class ProcessesStopped(Stopped):
    """Another process of the run ended, or torchrun stopped this one: the run is over."""


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes training together (alone by default)."""

    rank: int = 0
    count: int = 1
    local_rank: int = 0

    @property
    def alone(self) -> bool:
        return self.count == 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder: the first one, or the only one."""
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """This process's device: its machine's GPU LOCAL_RANK, or the CPU; None when alone
        (the trainer's usual choice)."""
        if self.alone:
            return None
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a batch that the processes cannot share in equal blocks."""
        if batch_size % self.count:
            raise ValueError(
                f"batch_size {batch_size} does not split evenly among {self.count} processes: "
                f"give a multiple of {self.count} (--set batch_size=...; it is the whole "
                "batch, of which each process computes an equal block)"
            )

    def rows(self, batch_size: int) -> slice:
        """This process's block of the rows of a batch of `batch_size`."""
        self.check_batch_size(batch_size)
        block = batch_size // self.count
        return slice(self.rank * block, (self.rank + 1) * block)

    def parallel(self, network: nn.Module) -> nn.Module:
        """`network` wrapped to add up its gradients over the processes (`add_up`); alone,
        `network` itself."""
        if self.alone:
            return network
        on_gpu = next(network.parameters()).device.type == "cuda"
        wrapped = DistributedDataParallel(network, device_ids=[self.local_rank] if on_gpu else None)
        wrapped.register_comm_hook(None, add_up)
        return wrapped

    def sharded(self, network: nn.Module) -> nn.Module:
        """`network` run on this process's rows of each batch (`ShardedNetwork`); alone,
        `network` itself."""
        return network if self.alone else ShardedNetwork(network, self)

    @contextmanager
    def first_on_each_machine(self) -> Iterator[None]:
        """Run the body in the first process of each machine, then in its others: it may
        download into a cache folder they share, which two at once would spoil."""
        if self.local_rank > 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if not self.alone:
            dist.barrier()

    def check_same(self, value: object, what: str) -> None:
        """Refuse to go on unless every process holds the same `value` (`what` names it)."""
        if self.alone:
            return
        values: list[object] = [None] * self.count
        dist.all_gather_object(values, value)
        if any(other != values[0] for other in values):
            raise ValueError(
                f"the processes start from different {what} ({', '.join(map(str, values))}): "
                "every machine must see the same run folder (--out on a shared filesystem)"
            )

    @contextmanager
    def output(self) -> Iterator[None]:
        """Print in the body only from the first process: the others' lines would repeat
        its own. Errors (on standard error) are every process's."""
        if self.writes:
            yield
            return
        with open(os.devnull, "w") as nowhere, redirect_stdout(nowhere):
            yield


def add_up(state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DistributedDataParallel's communication hook that sums the processes' gradients.

    Its default averages them, which suits a loss averaged over each process's own rows;
    here each process's loss is the whole batch's, so their gradients add up to it.
    """
    exchange = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return exchange.then(lambda done: done.value()[0])


class ShardedNetwork(nn.Module):
    """A network that several processes run on one batch, each on its own block of rows.

    Called as the network is, with the whole batch (the first dimension of every tensor
    argument), it runs `network` on this process's rows and returns the outputs of the whole
    batch: its own, which carry gradients, beside the other processes' own, gathered from
    them, which do not.
    """

    def __init__(self, network: nn.Module, processes: Processes):
        super().__init__()
        self.network, self.processes = network, processes

    def forward(self, *inputs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        rows = self.processes.rows(inputs[0].shape[0])
        # (B / N, ...): this process's block
        own = self.network(*(x[rows] for x in inputs), **{k: v[rows] for k, v in named.items()})
        blocks = [torch.empty_like(own) for _ in range(self.processes.count)]
        dist.all_gather(blocks, own.detach().contiguous())
        blocks[self.processes.rank] = own
        return torch.cat(blocks)  # (B, ...)


def from_environment() -> Processes:
    """This process's place as torchrun's environment variables give it; alone without them."""
    given = {name: os.environ.get(name) for name in ENVIRONMENT}
    if given["WORLD_SIZE"] is None:
        return Processes()
    try:
        rank, count, local_rank = (int(given[name] or 0) for name in ENVIRONMENT)
    except ValueError:
        raise ValueError(
            f"torchrun's environment variables must be whole numbers, got {given}"
        ) from None
    if not (0 <= rank < count and local_rank >= 0):
        raise ValueError(f"RANK must be in [0, WORLD_SIZE) and LOCAL_RANK >= 0, got {given}")
    return Processes(rank, count, local_rank)


def current() -> Processes:
    """This process's place in the started process group (`started`); alone if none is."""
    if not (dist.is_available() and dist.is_initialized()):
        return Processes()
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """torchrun stops the other processes with SIGTERM when one ends: end this one cleanly."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: this process is already ending
    raise ProcessesStopped(
        "torchrun stopped this process (another process of the run ended, or the run was stopped)"
    )


def ending(error: Exception) -> ProcessesStopped | None:
    """`error` as a ProcessesStopped if it says that another process of the run is gone; else
    None.

    Such as an exchange with that process failing: NCCL's failures are DistErrors, gloo's
    plain RuntimeErrors that name gloo. This process is then ending: from now on it ignores
    torchrun's SIGTERM, which would cut short the line that says why.
    """
    if isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and "gloo" in str(error)
    ):
        # "[.../pair.cc:545] Read error [127.0.0.1]:60566: Connection reset by peer. This is..."
        said = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(error).split())).split(". ")[0]
        error = ProcessesStopped(
            f"another process of the run ended (an exchange with it failed: {said[:160]})"
        )
    if not isinstance(error, ProcessesStopped):
        return None
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return error


@contextmanager
def started() -> Iterator[Processes]:
    """Join the processes torchrun started (gloo on the CPU, NCCL on GPUs) for the body.

    Yields this process's place; alone (no torchrun), starts nothing. Within the body a
    SIGTERM, torchrun's way to stop the processes left when one ends, raises ProcessesStopped.
    """
    processes = from_environment()
    if processes.alone:
        yield processes
        return
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(processes.local_rank)
    dist.init_process_group("nccl" if on_gpu else "gloo")
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        yield processes
    except BaseException:
        # ending: say why before torchrun's SIGTERM, sent when a process ends, cuts it short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    else:
        signal.signal(signal.SIGTERM, previous)
    finally:
        dist.destroy_process_group()
