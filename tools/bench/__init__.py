"""Benchmarks: Loft measured beside a baseline taken in the same run."""
