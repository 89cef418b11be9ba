"""Leakage check against downstream evaluation sets and within-corpus near-duplicates (see ARCHITECTURE.md)."""
