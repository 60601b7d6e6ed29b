"""Benchmarks: `llmos bench ...` prints figures; tests assert correctness, benchmarks measure."""
