"""Benchmark suites (`lmrec bench <suite>`): results as JSON + Markdown + PNG under benchmarks/results/."""
