"""Tollway devstack."""
