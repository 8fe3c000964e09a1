"""Tollway researcher service."""
