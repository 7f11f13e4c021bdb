"""flight_client: the consumer side of cogflight.

Connect to a server (or start one in-process), stream chips as Arrow batches,
turn them into PyTorch tensors without copying, and train with a
``torch.utils.data.IterableDataset`` or a TorchGeo ``GeoDataset``. Remote use
needs only pyarrow (and torch for tensors); the server package is imported
only for the embedded mode.
"""

from typing import Any

from ._client import Client, connect
from ._errors import (
    AuthenticationError,
    ClientError,
    CollectionNotFoundError,
    InvalidQueryError,
    MissingDependencyError,
    ServerError,
    ServerUnavailableError,
)
from ._query import build_query
from ._sampling import grid_boxes, random_points, scene_grids
from ._torch import UNSIGNED_CASTS, collate, move, stats, to_torch

__all__ = [
    "UNSIGNED_CASTS",
    "AuthenticationError",
    "ChipDataset",
    "Client",
    "ClientError",
    "CollectionNotFoundError",
    "FlightGeoDataset",
    "InvalidQueryError",
    "MissingDependencyError",
    "ServerError",
    "ServerUnavailableError",
    "build_query",
    "collate",
    "connect",
    "grid_boxes",
    "move",
    "random_points",
    "scene_grids",
    "stats",
    "to_torch",
]


def __getattr__(name: str) -> Any:
    """Import the torch- and torchgeo-dependent classes on first use."""
    if name == "ChipDataset":
        from ._dataset import ChipDataset

        return ChipDataset
    if name == "FlightGeoDataset":
        from ._torchgeo import FlightGeoDataset

        return FlightGeoDataset
    raise AttributeError(f"module 'flight_client' has no attribute {name!r}")
