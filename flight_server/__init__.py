"""flight_server: turns tickets into pixels and streams them over Arrow Flight.

The chip engine and the Flight service arrive in later releases; the package
exists so the distribution layout is stable.
"""

__all__: list[str] = []
