"""Routing: Werkzeug-compatible rules and maps, matched by carboy's own compiled matcher.

Rules and the map are Werkzeug's classes (extensions read ``rule.rule``, ``rule.endpoint``,
``rule.methods``, ``rule.arguments``, ``rule.defaults`` and call ``url_map.bind(...).match()``), so
everything Werkzeug documents about them holds. What is carboy's own is :class:`Router`: the rule
table compiled once into one dict for static paths and one alternation regex for dynamic ones,
which answers the common cases without binding a ``MapAdapter`` per request.
"""

from __future__ import annotations

from werkzeug.routing import BaseConverter, BuildError, Rule, ValidationError

from .router import Map, Router

__all__ = ["BaseConverter", "BuildError", "Map", "Router", "Rule", "ValidationError"]
