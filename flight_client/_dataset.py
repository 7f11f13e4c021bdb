"""A PyTorch ``IterableDataset`` over a cogflight query: every chip exactly once per epoch.

The query is planned into shard endpoints; endpoints are dealt round-robin to
every consumer (DDP rank x DataLoader worker), after a shuffle that depends only
on ``seed`` and the epoch, so all consumers agree on the split without talking.
Connections are opened lazily inside each worker: the client pickles as its
address, and a worker forked after gRPC started calls through helper processes
(see ``_transport``), so every DataLoader start method works.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any, Unpack

import numpy as np

from cogflight_core import ChipQuery, InvalidArgumentError, MissingDependencyError

from ._client import Client, connect
from ._torch import UNSIGNED_CASTS, to_torch

try:
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError:  # pragma: no cover - the dataset needs torch; the client does not
    IterableDataset = object  # type: ignore[assignment, misc]
    get_worker_info = None  # type: ignore[assignment]

__all__ = ["ChipDataset"]


def _ddp_rank() -> tuple[int, int] | None:
    """(rank, world size) of this process, when torch.distributed is initialized here."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _consumer(ddp: tuple[int, int] | None = None) -> tuple[int, int]:
    """(index, count) of this consumer among DDP ranks x DataLoader workers.

    The rank comes from ``torch.distributed`` when it is initialized in this
    process; else from ``ddp``, what the dataset saw when it was sent to a spawned
    worker (spawned workers do not inherit the process group); else from the
    ``RANK``/``WORLD_SIZE`` variables torchrun sets.
    """
    rank, world = (
        _ddp_rank()
        or ddp
        or (
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
        )
    )
    info = get_worker_info() if get_worker_info is not None else None
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nw + wid, world * nw


class ChipDataset(IterableDataset[dict[str, Any]]):
    """Chips of one query as samples (or whole batches) of tensors.

    Args:
        client: a :class:`Client` or a location string (``None``: embedded server).
        collection: the Collection name.
        shuffle: deal endpoints in a per-epoch random order, and the chips of each batch
            (when yielding chips; whole batches keep the server's order).
        seed: base of the shuffle; ``set_epoch(e)`` changes it per epoch.
        shards_per_consumer: endpoints per consumer (more = finer load balance).
        batches: yield whole batches (use ``DataLoader(batch_size=None)``) instead of chips.
        unsigned: cast for uint16/32/64 pixels (see :func:`to_torch`).
        **query: the wire-contract fields (geometries, bands, chip_size, filter...).

    Every chip of the query is yielded exactly once per epoch over all DDP ranks and
    DataLoader workers, also across a server restart: a broken stream is resumed after
    its last chip (``Client(retries=..., retry_wait_s=...)``). Each consumer may get a
    different number of chips.

    Worker processes: with the default ``fork`` start method on Linux, workers forked
    after this process started gRPC (it planned a query, used the client, or runs an
    embedded server) make their calls through small helper processes, transparently
    (counted in ``flight_client.stats()["relayed_requests"]``). To give every worker
    its own gRPC instead, start them from a clean process::

        DataLoader(ds, batch_size=32, num_workers=4,
                   multiprocessing_context="forkserver")

    ``forkserver`` (or ``spawn``) workers receive the dataset pickled: the client
    travels as its address and each worker connects directly. Their start costs an
    interpreter start-up and the imports once per worker (``persistent_workers=True``
    pays it once per run); the script's entry point needs the usual
    ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        client: Client | str | None,
        collection: str,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shards_per_consumer: int = 2,
        batches: bool = False,
        unsigned: str = "keep",
        **query: Unpack[ChipQuery],
    ) -> None:
        if IterableDataset is object:
            raise MissingDependencyError(
                "ChipDataset needs PyTorch: pip install 'cogflight[torch]'"
            )
        if shards_per_consumer < 1:
            raise InvalidArgumentError("shards_per_consumer must be >= 1")
        if int(seed) < 0:
            raise InvalidArgumentError(f"seed must be >= 0, got {seed}")
        if unsigned not in UNSIGNED_CASTS:
            raise InvalidArgumentError(f"unsigned: expected one of {', '.join(UNSIGNED_CASTS)}")
        self.client = client if isinstance(client, Client) else connect(client)
        self.collection = collection
        self.shuffle = shuffle
        self.seed = int(seed)
        self.shards_per_consumer = shards_per_consumer
        self.batches = batches
        self.unsigned = unsigned
        self.query: ChipQuery = query
        self.client.query(collection, **query)  # validate the arguments now, without a call
        # Shared with DataLoader workers (also persistent ones) so set_epoch reaches them.
        self._epoch = multiprocessing.get_context().RawValue("q", 0)
        self._ddp: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Carry this process's DDP rank to spawned DataLoader workers."""
        state = self.__dict__.copy()
        state["_ddp"] = _ddp_rank() or self._ddp
        return state

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` from the next iteration on (in every worker)."""
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        """The epoch whose shuffle the next iteration uses."""
        return int(self._epoch.value)

    def endpoints(self, consumer: tuple[int, int] | None = None) -> list[Any]:
        """This consumer's endpoints for the current epoch, in reading order."""
        me, consumers = consumer or _consumer(self._ddp)
        info = self.client.plan(
            self.collection, shards=consumers * self.shards_per_consumer, **self.query
        )
        endpoints = list(info.endpoints)
        order = np.arange(len(endpoints))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        return [endpoints[k] for pos, k in enumerate(order) if pos % consumers == me]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        consumer = _consumer(self._ddp)
        rng = np.random.default_rng([self.seed, self.epoch, consumer[0]])
        for endpoint in self.endpoints(consumer):
            for record_batch in self.client.read_endpoint(endpoint):
                batch = to_torch(record_batch, unsigned=self.unsigned)
                if self.batches:
                    yield batch
                    continue
                n = record_batch.num_rows
                rows = rng.permutation(n) if self.shuffle else range(n)
                for i in rows:
                    yield {k: v[i] for k, v in batch.items()}
