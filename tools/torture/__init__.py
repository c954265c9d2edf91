"""Torture harness for scopeledger: concurrency with SIGKILL, crash injection,
real PID reuse in a PID namespace, disk full on a tiny tmpfs, a bad-input
corpus and attacks. ``python -m tools.torture --minutes 5``; RELIABILITY.md
records the figures. The short versions live in ``tests/test_torture_*.py``.
"""
