"""Tollway events."""
