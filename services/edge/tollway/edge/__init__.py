"""Tollway edge service."""
