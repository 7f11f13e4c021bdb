"""A map-style dataset over a patch Collection: sample ``i`` is row ``i``, one chip each.

Patch Collections (:func:`catalog.make_patches`) hold one row per training
sample with its own footprint and labels; served in patch mode, each row is
exactly one chip. This dataset is what PyTorch users expect of such data: a
length, random access, any sampler (``shuffle=True``, ``DistributedSampler``,
weighted sampling by label), and ``__getitems__`` so one DataLoader batch is one
request. With TorchGeo installed it is a ``NonGeoDataset`` (samples hold
``image`` or ``mask``, and ``label``), so TorchGeo's ``NonGeoDataModule`` takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from cogflight_core import ChipQuery, InvalidArgumentError, MissingDependencyError

from ._client import Client, connect
from ._torch import UNSIGNED_CASTS, to_torch

try:
    from torch.utils.data import Dataset
except ImportError:  # pragma: no cover - the dataset needs torch; the client does not
    Dataset = None  # type: ignore[assignment, misc]
try:  # TorchGeo's base for datasets of patches, when installed
    from torchgeo.datasets import NonGeoDataset as _Base
except Exception:  # pragma: no cover - torchgeo missing or broken: plain PyTorch
    _Base = Dataset if Dataset is not None else object  # type: ignore[assignment, misc]

__all__ = ["PatchDataset"]


class PatchDataset(_Base):
    """Rows of a patch Collection as samples: ``len()`` rows, ``ds[i]`` the chip of row i.

    Args:
        client: a :class:`Client` or a location string (``None``: embedded server).
        collection: a patch Collection's name.
        label_field: a column to return as ``label`` (a tensor when numeric).
        columns: more columns to pass through into each sample.
        filter: which rows (e.g. ``{"where": [["split", "==", "train"]]}``).
        geometry: ``True`` (each row's ``geometry``) or the name of a lon/lat WKB column.
        is_image: samples hold ``image`` (``[C, H, W]``); else ``mask`` (the first band).
        transforms: applied to each sample dict, as TorchGeo datasets do.
        unsigned: cast for uint16/32/64 pixels (see :func:`to_torch`).
        **query: other wire-contract fields (``chip_size``, ``bands``, ``resolution``...);
            give ``chip_size`` so that every sample has one shape.

    Samples: ``image`` (or ``mask``), ``valid`` (``[H, W]`` bool), ``id``, ``crs``,
    ``bounds``, ``transform``, ``label`` and the passed columns. The index is read
    once, at construction; the dataset pickles as the client's address, so every
    DataLoader start method works.
    """

    def __init__(
        self,
        client: Client | str | None,
        collection: str,
        *,
        label_field: str | None = None,
        columns: Sequence[str] = (),
        filter: Mapping[str, Any] | None = None,
        geometry: bool | str = True,
        is_image: bool = True,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        unsigned: str = "keep",
        **query: Any,
    ) -> None:
        if Dataset is None:
            raise MissingDependencyError(
                "PatchDataset needs PyTorch: pip install 'cogflight[torch]'"
            )
        if unsigned not in UNSIGNED_CASTS:
            raise InvalidArgumentError(f"unsigned: expected one of {', '.join(UNSIGNED_CASTS)}")
        for name in ("patches", "filter", "columns", "geometries", "time_series"):
            if name in query:
                raise InvalidArgumentError(
                    f"{name}: PatchDataset sets it; use the constructor's own arguments"
                )
        self.client = client if isinstance(client, Client) else connect(client)
        self.collection = collection
        self.label_field = label_field
        self.columns = [*([label_field] if label_field else []), *columns]
        self.geometry = geometry
        self.is_image = is_image
        self.transforms = transforms
        self.unsigned = unsigned
        self.query: dict[str, Any] = query
        index = self.client.index(collection, filter=filter)
        missing = [c for c in self.columns if c not in index.column_names]
        if missing:
            raise InvalidArgumentError(
                f"columns: Collection {collection!r} has no column {missing[0]!r}"
            )
        self.ids: list[str] = [str(v) for v in index.column("id").to_pylist()]
        # validate the fields now, without a call
        self.client.query(collection, **self._fields(self.ids[:1]))

    def _fields(self, ids: Sequence[str]) -> ChipQuery:
        fields: dict[str, Any] = dict(self.query)
        fields.update(
            patches=self.geometry,
            filter={"ids": list(ids)},
            columns=self.columns,
            ramp=False,  # the batch is used whole
        )
        return fields  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The sample of row ``index`` (negative indices count from the end)."""
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The samples of several rows (a DataLoader batch) from one request."""
        n = len(self.ids)
        rows = []
        for i in indices:
            k = int(i)
            if not -n <= k < n:
                raise IndexError(f"index {k} out of range for {n} patches")
            rows.append(k % n)
        wanted = sorted({self.ids[r] for r in rows})
        batches = list(self.client.chips(self.collection, **self._fields(wanted)))
        got: dict[str, dict[str, Any]] = {}
        for record_batch in batches:
            batch = to_torch(record_batch, unsigned=self.unsigned)
            for j in range(record_batch.num_rows):
                got[batch["id"][j]] = self._sample({k: v[j] for k, v in batch.items()})
        lost = [w for w in wanted if w not in got]
        if lost:
            raise InvalidArgumentError(
                f"patches {lost[:3]} made no chip (their rows changed on the server?)"
            )
        return [got[self.ids[r]] for r in rows]

    def _sample(self, chip: dict[str, Any]) -> dict[str, Any]:
        data = chip.pop("chip")
        sample: dict[str, Any] = {"image" if self.is_image else "mask": data if self.is_image
                                  else data[0]}
        for key in ("valid", "id", "crs", "bounds", "transform"):
            sample[key] = chip[key]
        for name in self.columns:
            sample["label" if name == self.label_field else name] = chip[name]
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def table(self) -> pa.Table:
        """The rows this dataset serves (its index), e.g. to weight a sampler by label."""
        return self.client.index(self.collection, filter={"ids": self.ids})
