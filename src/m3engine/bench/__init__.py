"""Benchmarks: `m3engine bench serve` drives a running server over HTTP."""
