"""Benchmarks: each module runs as ``python -m mflc.bench.NAME`` and prints ratios against a baseline measured
in the same run (docs/benchmarks.md records the results). Nothing else in mflc imports them."""
