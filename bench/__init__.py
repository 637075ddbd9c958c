"""Benchmarks for incidentbot: `python -m bench.run` (see bench/README.md)."""
