"""The wire contract's query parser (declared once in :mod:`cogflight_core`), re-exported."""

from cogflight_core import QUERY_VERSION, Query, parse_query

__all__ = ["QUERY_VERSION", "Query", "parse_query"]
