"""Tollway ledger service."""
