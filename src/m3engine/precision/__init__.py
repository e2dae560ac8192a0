"""Reduced precision behind the accuracy gate, decided at load on the user's own weights."""
