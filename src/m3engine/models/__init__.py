"""Checkpoint discovery, model kinds and the exact semantics of each head."""
