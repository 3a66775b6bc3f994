"""Benchmarks: measured figures, never timed assertions (`make bench`, docs/benchmarks.md).

Each benchmark is a module run as `python -m benches.<name>`; shared pieces live beside them:
`data` makes the seeded market data, `timing` measures and describes the machine, `processes`
gives the services a bench starts their environment and tells when they are ready.
"""
