"""Real processes for tests and benchmarks: Redis servers, workers, the stand-in API, serve, run.

Not shipped: ``tests/`` and ``bench/`` import it; every address it uses is on loopback.
"""
