"""The benchmark scenarios, in the order ``make bench`` runs them.

Each module has ``run(ctx) -> list[Figure]``; see bench/README.md for what
each one measures and against which baseline.
"""
