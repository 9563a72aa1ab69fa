"""Benchmarks: each measures smartmon side by side with a baseline in the same run."""
