"""Who this process is in a data-parallel run, and how ranks wait for each other.

Under ``accelerate launch`` / ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) every rank answers its
share of the samples; rank 0 scores after :meth:`DistributedContext.barrier`. The barrier is
``torch.distributed.barrier()`` on the launcher's process group (created here with the gloo
backend when nothing created one yet). A single process needs no torch at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from .errors import RunError

# Ranks may finish hours apart (one got the slow volumes); the barrier must outlast that.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class DistributedContext:
    rank: int = 0
    world: int = 1
    _owns_group: bool = False

    @classmethod
    def from_environment(cls) -> "DistributedContext":
        """(rank, world size) from the launcher's environment; (0, 1) for a plain process."""
        try:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            return cls()
        if world < 1 or not 0 <= rank < world:
            raise RunError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
        return cls(rank=rank, world=world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, sample_id: str) -> bool:
        """Whether this rank answers a sample (the same split as ``--shard``)."""
        from .planning import in_shard

        return self.world == 1 or in_shard(sample_id, self.rank, self.world)

    def barrier(self) -> None:
        """Wait until every rank reaches this point (no-op for one process)."""
        if self.world == 1:
            return
        try:
            import torch.distributed as dist
        except ImportError as exc:
            raise RunError(f"WORLD_SIZE={self.world} needs torch.distributed to synchronise ranks: {exc}") from exc
        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world, timeout=BARRIER_TIMEOUT)
            self._owns_group = True
        dist.barrier()

    def close(self) -> None:
        """Tear down the process group if this context created it."""
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_group = False
