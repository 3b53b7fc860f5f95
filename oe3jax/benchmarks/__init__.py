"""Throughput and utilisation measurements reported by ``scripts/benchmark.py`` (never imported by
the library itself)."""
