"""Tests of the PyTorch exporter (a package so its module names stay unique)."""
