"""Benchmark scripts and the builders of the test/benchmark models (``benchmarks.models``)."""
