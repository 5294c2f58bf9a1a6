"""Benchmarks: measured numbers, each against a baseline taken in the same run."""
