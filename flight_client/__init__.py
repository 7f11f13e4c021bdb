"""flight_client: the consumer side (tensors, datasets, TorchGeo).

The client arrives in a later release; the package exists so the
distribution layout is stable.
"""

__all__: list[str] = []
