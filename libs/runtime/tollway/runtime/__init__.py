"""Tollway runtime."""
