"""Engine settings: the ``engine`` section of the one configuration model.

Every variable and default is in ``docs/configuration.md``; constructor
arguments of :class:`~flight_server.ChipEngine` win over them.
"""

from __future__ import annotations

from cogflight_core import EngineSettings, config

__all__ = ["EngineSettings", "engine_settings"]


def engine_settings() -> EngineSettings:
    """The engine settings of this process (read from the environment on first use)."""
    return config().engine
