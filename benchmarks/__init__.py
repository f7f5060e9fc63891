"""Benchmark scripts, each run as ``python benchmarks/<name>.py``; ``throughput_lib`` holds the pieces of
``throughput.py``."""
