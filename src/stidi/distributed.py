"""Data-parallel training on ``torch.distributed``: process group, batch shards, summed updates.

``torchrun --nproc_per_node=N -m stidi train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`from_environment` joins them into one process group (gloo on CPUs, NCCL when
CUDA is available). Every rank takes a fixed, contiguous share of every global batch
(:meth:`Context.shard`), computes the exact fixed-point sums of the STiDi-BP update of
its share (:func:`stidi.stidi_bp.update_sums`; the quanta come from the global batch
size and the largest error of each channel over all ranks, one small
:meth:`Context.all_reduce_max` per weighted layer) and :meth:`Context.reduce_step` adds
them with one ``all_reduce``. Integer sums are exact, so every rank ends up with the sums
one process computes over the whole batch, applies the update one process would apply —
the same to the bit — and holds identical weights after every step.
Train-accuracy counts and stop requests (SIGINT/SIGTERM on any rank) travel in the
same buffer, so all ranks count the same and stop at the same step.

A dead or hung peer makes a collective raise (gloo reports the closed connection, or
the group's timeout expires); :class:`PeerLostError` turns that into one line naming
the rank and saying to ``--resume``. One process (no ``WORLD_SIZE`` or
``WORLD_SIZE=1``) is :data:`SINGLE`: no process group, no communication, and training
is exactly what it is without this module.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch

from .errors import StidiError

#: Seconds a collective waits for the other ranks before the job fails (``--dist-timeout``).
DEFAULT_TIMEOUT_S = 600.0
ENV_TIMEOUT = "STIDI_DIST_TIMEOUT"
ENV_BACKEND = "STIDI_DIST_BACKEND"
T = TypeVar("T")


class PeerLostError(StidiError):
    """A collective failed: another rank died, was killed or stopped answering."""


@dataclass(frozen=True)
class Context:
    """Where this process stands in a data-parallel job (``world = 1``: alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    owns_group: bool = False  # this module started the process group, so it also ends it

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics, models, logs and the progress bar."""
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch's indices (sizes differ by at most one)."""
        if not self.active:
            return index
        return torch.tensor_split(index, self.world)[self.rank]

    def span(self, count: int) -> tuple[int, int]:
        """``[first, end)``: this rank's contiguous share of ``count`` items (for evaluation)."""
        if not self.active:
            return 0, count
        bounds = [count * r // self.world for r in range(self.world + 1)]
        return bounds[self.rank], bounds[self.rank + 1]

    # -- collectives -------------------------------------------------------------------
    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Sum of ``tensor`` over all ranks (a new tensor on the CPU, in ``tensor``'s dtype)."""
        import torch.distributed as dist

        buffer = tensor.detach().to(self._device()).clone()
        try:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        except Exception as exc:  # gloo/NCCL raise RuntimeError subclasses with multi-line texts
            raise self.lost(what, exc) from exc
        return buffer.cpu()

    def broadcast(self, obj: Any, what: str) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for start-up state, not per step)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        payload = [obj if self.is_writer else None]
        try:
            dist.broadcast_object_list(payload, src=0, device=self._device() if self.backend == "nccl" else None)
        except (RuntimeError, pickle.PicklingError, EOFError) as exc:
            raise self.lost(what, exc) from exc
        return payload[0]

    def lost(self, what: str, exc: BaseException) -> PeerLostError:
        """The one-line error for a failed collective."""
        reason = _first_sentence(exc)
        return PeerLostError(f"rank {self.rank} of {self.world}: {what} failed, another process died or stopped "
                             f"answering ({reason}); the job stops here: start it again with --resume to continue "
                             "from the last checkpoint")

    def all_reduce_max(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Element-wise maximum of ``tensor`` over all ranks (``tensor`` itself for one process)."""
        if not self.active:
            return tensor
        import torch.distributed as dist

        buffer = tensor.detach().to(self._device()).clone()
        try:
            dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
        except Exception as exc:
            raise self.lost(what, exc) from exc
        return buffer.cpu()

    def reduce_step(self, sums: list[torch.Tensor], times: list[torch.Tensor], correct: int, stop: bool, where: str,
                    ) -> tuple[list[torch.Tensor], int, bool]:
        """The global batch's exact update sums, its correct count and whether any rank asked to stop.

        ``sums`` are this rank's exact fixed-point sums (:func:`stidi.stidi_bp.update_sums`,
        float64, every entry a multiple of a quantum all ranks share and every total below
        ``2^53`` quanta), so the float64 ``all_reduce(SUM)`` adds integers: exact, in whatever
        order the backend adds, and equal to the sums one process computes over the whole
        batch (the counts ride along at the end of the buffer). The same bytes as int64, and
        NaN/inf survive. NaN spike times here (``times``) make this rank's contribution NaN,
        so that every rank sees a non-finite update and stops at the same step.
        """
        if not self.active:
            return sums, correct, stop
        nan = any(torch.isnan(t).any() for t in times[1:])
        parts = [(torch.full(g.shape, float("nan"), dtype=torch.float64) if nan else g.double()).reshape(-1) for g in sums]
        flags = torch.tensor([correct, 1.0 if stop else 0.0], dtype=torch.float64)
        total = self.all_reduce_sum(torch.cat([*parts, flags]), f"summing the update of {where}")
        out, offset = [], 0
        for g in sums:
            out.append(total[offset : offset + g.numel()].reshape(g.shape))
            offset += g.numel()
        return out, int(round(float(total[-2]))), float(total[-1]) > 0

    def sum_floats(self, values: list[float], what: str) -> list[float]:
        """Element-wise sum of a list of floats over the ranks (float64)."""
        if not self.active:
            return values
        return self.all_reduce_sum(torch.tensor(values, dtype=torch.float64), what).tolist()

    def local_first(self, load: Callable[[], T], what: str) -> T:
        """``load()`` on each machine's first rank, then on the others (e.g. a dataset that
        may have to be fetched into a cache they share: one fetch per machine, no race)."""
        if not self.active:
            return load()
        if self.local_rank == 0:
            result = load()
            self.barrier(what)
            return result
        self.barrier(what)
        return load()

    def barrier(self, what: str) -> None:
        """Wait for every rank (used before a run ends so none exits while others still write)."""
        if self.active:
            self.all_reduce_sum(torch.zeros(1), what)


SINGLE = Context()


def _first_sentence(exc: BaseException) -> str:
    """The gist of a backend error: first line, source location and advice stripped, at most 160 characters."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().split("\n")[0])
    text = text.split(". ")[0].rstrip(".")
    return text[:160] or type(exc).__name__


def requested_world() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise StidiError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from None


def timeout_from_environment(default: float = DEFAULT_TIMEOUT_S) -> float:
    """``$STIDI_DIST_TIMEOUT`` seconds, else ``default``."""
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise StidiError(f"{ENV_TIMEOUT}={text!r} must be a number of seconds > 0")
    return value


def choose_backend() -> str:
    """``$STIDI_DIST_BACKEND`` if set, else NCCL when CUDA is available, else gloo."""
    chosen = os.environ.get(ENV_BACKEND, "").strip().lower()
    if chosen:
        if chosen not in ("gloo", "nccl"):
            raise StidiError(f"{ENV_BACKEND}={chosen!r}: use 'gloo' or 'nccl'")
        return chosen
    return "nccl" if torch.cuda.is_available() else "gloo"


def from_environment(timeout_s: float | None = None) -> Context:
    """Join the process group torchrun describes in the environment; :data:`SINGLE` outside torchrun.

    ``timeout_s`` bounds every wait for another rank (default: ``$STIDI_DIST_TIMEOUT``
    or 600 s): past it the job fails with :class:`PeerLostError` instead of hanging.
    """
    world = requested_world()
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise StidiError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with "
                         "'torchrun --nproc_per_node=N -m stidi train ...'")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = choose_backend()
    seconds = timeout_s if timeout_s is not None else timeout_from_environment()
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise StidiError(f"{ENV_BACKEND}=nccl but CUDA is not available here; use gloo")
        if local_rank >= torch.cuda.device_count():
            raise StidiError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); start at most "
                             f"one process per GPU (--nproc_per_node) or set {ENV_BACKEND}=gloo")
        torch.cuda.set_device(local_rank)
    owns = not dist.is_initialized()
    if owns:
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=seconds))
        except Exception as exc:
            reason = _first_sentence(exc)
            raise StidiError(f"rank {rank} of {world}: could not join the {backend} process group at "
                             f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({reason}); check that every "
                             "node uses the same --rdzv-endpoint/--master_addr and that the port is reachable") from None
    return Context(rank=rank, world=world, local_rank=local_rank, backend=backend, owns_group=owns)


def limit_threads(threads: int) -> None:
    """Cap the numba kernels at ``threads`` threads, as ``torch.set_num_threads`` caps PyTorch.

    numba otherwise starts one thread per core in every process, so N ranks on one node
    would run N times as many threads as there are cores.
    """
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def shutdown(ctx: Context, wait_for_peers: bool = True) -> None:
    """Leave the process group (after a run, so torchrun sees a clean exit). ``wait_for_peers = False``
    (a run that failed, e.g. because a peer died) leaves at once, without the closing barrier."""
    if ctx.active and ctx.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            # after a clean run every rank reaches this point before any leaves the group: a rank that
            # tore its connections down while rank 0 was still writing the run's files made the peer abort
            if wait_for_peers:
                try:
                    dist.barrier()
                except Exception:  # a lost peer: nothing left to wait for
                    pass
            dist.destroy_process_group()
