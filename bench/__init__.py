"""Benchmarks for tokend, each run by hand: `python -m bench.<name> --help`."""
