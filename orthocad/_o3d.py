"""Temporary alias (integration in progress)."""
from orthocad._native import open3d  # noqa: F401
