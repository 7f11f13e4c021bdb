"""flight_client: the consumer side of cogflight.

Connect to a server (or start one in-process), stream chips as Arrow batches,
turn them into PyTorch tensors without copying, and train with a
``torch.utils.data.IterableDataset`` or a TorchGeo ``GeoDataset``. Remote use
needs only pyarrow (and torch for tensors); the server package is imported
only for the embedded mode.
"""

from typing import Any

from cogflight_core import (
    AuthenticationError,
    CogflightError,
    CollectionNotFoundError,
    DeadlineExceededError,
    EmptyResultWarning,
    InvalidArgumentError,
    MissingDependencyError,
    PermissionDeniedError,
    ServerError,
    UnavailableError,
)
from cogflight_core._deprecated import deprecated_attribute

from ._client import Client, connect
from ._query import build_query
from ._sampling import grid_boxes, random_points, scene_grids
from ._torch import UNSIGNED_CASTS, collate, move, stats, to_torch

__all__ = [
    "UNSIGNED_CASTS",
    "AuthenticationError",
    "ChipDataset",
    "Client",
    "CogflightError",
    "CollectionNotFoundError",
    "DeadlineExceededError",
    "EmptyResultWarning",
    "FlightGeoDataset",
    "GeoBatchLoader",
    "InvalidArgumentError",
    "MissingDependencyError",
    "PatchDataset",
    "PermissionDeniedError",
    "ServerError",
    "UnavailableError",
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
    if name == "PatchDataset":
        from ._patchset import PatchDataset

        return PatchDataset
    if name == "GeoBatchLoader":
        from ._geoloader import GeoBatchLoader

        return GeoBatchLoader
    return deprecated_attribute(
        __name__,
        name,
        {
            "ClientError": ("flight_client.CogflightError", CogflightError),
            "InvalidQueryError": ("flight_client.InvalidArgumentError", InvalidArgumentError),
            "ServerUnavailableError": ("flight_client.UnavailableError", UnavailableError),
        },
    )
