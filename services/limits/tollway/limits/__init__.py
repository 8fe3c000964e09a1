"""Tollway limits service."""
