"""The delivery engine, Celery-free: fold the stream into state, claim, send, settle.

Pure policy (``fold``, ``outcome``, ``settlement``, ``gate``, ``ratelimit``, ``backoff``,
``records``) imports no Redis, HTTP or Celery module; ``store`` (with ``lua/``) and
``sender`` carry its decisions out; ``pump`` drives them; ``runtime`` builds one per process.
"""
