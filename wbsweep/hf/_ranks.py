"""This process's place in a multi-rank job, and rank 0's voice to the other ranks."""

from __future__ import annotations

import os
import sys
from typing import Any

from wbsweep.errors import UsageError

__all__ = ["Ranks", "picklable"]


class Ranks:
    """This process's place in the job, and rank 0's voice to the others."""

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        if "torch.distributed" in sys.modules or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                self.rank, self.world = dist.get_rank(), dist.get_world_size()
            elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise UsageError(
                    "WORLD_SIZE > 1 but no torch.distributed process group: build the "
                    "Trainer (it sets the group up) before hyperparameter_search"
                )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, message: Any) -> Any:
        """Rank 0's ``message`` on every rank (others pass ``None``)."""
        if self.world == 1:
            return message
        import torch.distributed as dist

        box = [message if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def picklable(value: Any) -> bool:
    import pickle

    try:
        # Round trip: some exceptions pickle but cannot be rebuilt on the other side.
        pickle.loads(pickle.dumps(value))
    except Exception:  # noqa: BLE001 - any failure means "send text instead"
        return False
    return True
