"""Recycled memory for the pixels of batches (used by `data/collate.py` and `data/stream.py`).

`BatchMemory` recycles that memory. Fresh shared memory for every batch costs the kernel more
than decoding the pixels does (reserving the pages, faulting each 4 KiB page in on first write
in the worker and again on first read in the consumer, unmapping), so a worker keeps the
storages of its batches and writes the next batch into one the consumer has dropped. "Dropped" is proven, not
guessed: the consumer process passes each received batch through a `ReleaseTracker`, which
clears a flag in a small shared array once no tensor or view of an earlier batch is left (torch
counts the references to a storage); a worker reuses only storages whose flag is clear, and
allocates new memory when none is (the pool never blocks, and never holds more than the
consumer does). The tracker also keeps the storages mapped in the consumer, so a reused one
costs no page faults there either. The one thing it cannot see is a third process: a consumer
that sends batch tensors on to another process must keep its own reference until that process
is done with them (or send a copy).
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["BatchMemory", "ReleaseTracker", "release_flags", "empty_tensor"]


def empty_tensor(shape: tuple[int, ...], dtype: torch.dtype, zero: bool = True) -> torch.Tensor:
    """A tensor in shared memory when called inside a DataLoader worker, else ordinary memory."""
    if torch.utils.data.get_worker_info() is None:
        return torch.zeros(shape, dtype=dtype) if zero else torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    out = torch.empty(0, dtype=dtype).set_(storage).view(shape)
    return out.zero_() if zero else out


def _storage_bytes(nbytes: int, shared: bool) -> torch.UntypedStorage:
    if not shared:
        return torch.UntypedStorage(nbytes)
    return torch.UntypedStorage._new_shared(nbytes)


def release_flags(count: int):
    """`count` one-byte flags in shared memory (1 = that slot's batch is still held), made in
    the consumer process before the DataLoader starts its workers (they inherit it)."""
    return multiprocessing.RawArray(ctypes.c_uint8, max(count, 1))


class BatchMemory:
    """Reusable storages for the pixels of batches (see the module docstring).

    flags/first/count: this worker's `count` flags from `release_flags`, starting at `first`;
    the consumer clears a flag through its `ReleaseTracker`. Without flags (a single process) a
    storage is free again once nothing but the pool references it.
    shared: allocate in shared memory (inside a DataLoader worker).
    """

    def __init__(self, flags=None, first: int = 0, count: int = 8, shared: bool = False):
        self.flags, self.first, self.count, self.shared = flags, first, count, shared
        self.slots: list[torch.UntypedStorage] = []
        self.reused = self.allocated = 0

    def _free(self, index: int) -> bool:
        if self.flags is not None:
            return self.flags[self.first + index] == 0
        # the pool's own reference is the only one left: no tensor views this storage
        return _only_pool_holds(self.slots[index])

    def take(self, nbytes: int) -> tuple[torch.UntypedStorage, int | None]:
        """(storage of at least `nbytes`, flag index to hand to the consumer or None)."""
        if _storage_use_count is None:  # no way to prove a storage dropped: keep none
            self.allocated += 1
            return _storage_bytes(nbytes, self.shared), None
        free = [i for i in range(len(self.slots)) if self._free(i)]
        fits = [i for i in free if self.slots[i].nbytes() >= nbytes]
        if fits:
            index = min(fits, key=lambda i: self.slots[i].nbytes())
            self.reused += 1
        elif free or len(self.slots) < self.count:  # replace a too-small free one, or grow
            index = free[0] if free else len(self.slots)
            storage = _storage_bytes(nbytes, self.shared)
            self.slots[index:index + 1] = [storage]
            self.allocated += 1
        else:  # the consumer holds every slot: a one-off storage, not pooled
            self.allocated += 1
            return _storage_bytes(nbytes, self.shared), None
        if self.flags is None:
            return self.slots[index], None
        self.flags[self.first + index] = 1
        return self.slots[index], self.first + index


# torch's count of the references to a storage (tensors and views included). It is private API:
# a torch without it gets no recycling (`BatchMemory.take` then pools nothing and every batch
# allocates fresh memory), never a storage overwritten under a live view.
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)
if _storage_use_count is None:  # pragma: no cover - depends on the installed torch
    log.warning("torch %s has no torch._C._storage_Use_Count: batch memory is not recycled "
                "(batches stay correct; each one allocates fresh memory)", torch.__version__)


def _only_pool_holds(storage: torch.UntypedStorage) -> bool:
    # one reference: the pool's (or the tracker's) own; no tensor or view uses it. Only reached
    # for pooled storages, which exist only when the count is available (see BatchMemory.take)
    return _storage_use_count(storage._cdata) == 1


class ReleaseTracker:
    """Consumer side of the workers' pools: `adopt` each received batch; a pooled storage whose
    every tensor and view has died gets its flag cleared (checked at each `adopt`), so its
    worker may write a new batch into it.

    The tracker keeps its own reference to each storage, so the shared memory stays mapped in
    this process: when the worker sends the same storage again, torch's sharing cache hands
    back the existing mapping instead of mapping (and faulting in) every page anew.
    """

    def __init__(self, flags):
        self.flags = flags
        self.mapped: dict[int, torch.UntypedStorage] = {}   # flag index -> storage
        self.lent: set[int] = set()                          # flags of batches not yet dropped

    def sweep(self) -> None:
        """Clear the flags of lent storages that nothing but the tracker references."""
        for index in [i for i in self.lent if _only_pool_holds(self.mapped[i])]:
            self.lent.discard(index)
            self.flags[index] = 0

    def adopt(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.sweep()
        for part in (batch, batch.get("target")):
            index = part.pop("_slot", None) if isinstance(part, dict) else None
            if index is not None:
                self.mapped[index] = part["image"].untyped_storage()
                self.lent.add(index)
        return batch


