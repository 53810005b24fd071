"""Benchmarks: what a stack costs, from evaluating the program to converging the host.

Scripts that print numbers, not timed tests. `python -m bench` runs them all
and prints each figure next to its target (README.md, "Performance").
"""
