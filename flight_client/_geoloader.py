"""Prefetching batches of a TorchGeo sampler's queries from a :class:`FlightGeoDataset`.

Concurrency policy: the sampler is read in the consuming thread; each batch's
request runs in one of ``prefetch`` threads, which end with the epoch.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from torch.utils.data import BatchSampler, IterableDataset, get_worker_info

from cogflight_core import InvalidArgumentError

if TYPE_CHECKING:
    from ._torchgeo import FlightGeoDataset

__all__ = ["GeoBatchLoader"]


class GeoBatchLoader(IterableDataset):  # type: ignore[type-arg]
    """Collated batches of a sampler's queries, the next ones fetched in the background.

    For a DataLoader without workers (``num_workers=0``), where nothing else overlaps
    fetching with training: while one batch is consumed, the requests of the next
    ``prefetch`` batches run in as many threads (each batch is one
    :meth:`FlightGeoDataset.__getitems__`, so usually one request). The sampler is
    iterated in the consuming thread, ahead by ``prefetch`` batches; batches come in
    sampler order, equal to what ``DataLoader(dataset, sampler=..., batch_size=...)``
    gives. Iterate it directly, or wrap it for Lightning or pinning as
    ``DataLoader(batches, batch_size=None)``. Each ``iter()`` is one epoch over the
    sampler; its threads end when the epoch ends, on an error, and when the iterator
    is closed or dropped (waiting for the requests in flight, at most ``prefetch``).
    ``transforms`` and ``collate_fn`` run in those threads. ``prefetch=0`` fetches
    each batch when asked, in the calling thread. With DataLoader workers, give the
    dataset itself to the DataLoader instead (its ``prefetch_factor`` overlaps); in
    workers this loader deals batches to workers round-robin.
    """

    def __init__(
        self,
        dataset: FlightGeoDataset,
        sampler: Iterable[Any],
        batch_size: int = 1,
        *,
        prefetch: int = 2,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size: expected a positive int, got {batch_size}")
        if prefetch < 0:
            raise InvalidArgumentError(f"prefetch: expected an int >= 0, got {prefetch}")
        if collate_fn is None:
            from torchgeo.datasets import stack_samples

            collate_fn = stack_samples
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.collate_fn = collate_fn
        self.drop_last = drop_last

    def __len__(self) -> int:
        return len(BatchSampler(self.sampler, self.batch_size, self.drop_last))

    def _fetch(self, queries: list[Any]) -> Any:
        return self.collate_fn(self.dataset.__getitems__(queries))

    def __iter__(self) -> Iterator[Any]:
        batches: Iterator[list[Any]] = iter(
            BatchSampler(self.sampler, self.batch_size, self.drop_last)
        )
        worker = get_worker_info()
        if worker is not None:  # in DataLoader workers: every num_workers-th batch
            batches = itertools.islice(batches, worker.id, None, worker.num_workers)
        if self.prefetch == 0:
            for queries in batches:
                yield self._fetch(queries)
            return
        self.dataset._scene_index()  # before the threads
        pool = ThreadPoolExecutor(self.prefetch, thread_name_prefix="cogflight-geo-prefetch")
        pending: deque[Future[Any]] = deque()
        try:
            for queries in itertools.islice(batches, self.prefetch):
                pending.append(pool.submit(self._fetch, queries))
            while pending:
                future = pending.popleft()
                queries = next(batches, [])
                if queries:
                    pending.append(pool.submit(self._fetch, queries))
                yield future.result()
        finally:  # done, failed, closed or dropped: no request left queued, no thread left
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
