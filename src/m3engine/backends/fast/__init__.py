"""The packed GPU engine: fused weights, an unpadded encoder forward, CUDA graphs per bucket."""

from m3engine.backends.fast.backend import FastBackend

__all__ = ["FastBackend"]
