"""Defaulting of built-in kinds, one module per API group (registers on import)."""
