"""Tollway router service."""
