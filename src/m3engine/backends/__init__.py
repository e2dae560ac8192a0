"""Backends run a packed batch through a model and return its head outputs. See base.Backend."""
