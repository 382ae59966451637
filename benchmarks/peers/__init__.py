"""Peer servers the benchmark suites compare lmrec against (each in its own virtual environment)."""
