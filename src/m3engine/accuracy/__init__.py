"""Accuracy against the fp32 reference: the gate, its metrics and the built-in sample (numpy only)."""
