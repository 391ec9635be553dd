"""The HTTP ingest endpoint (``dora-forwarder serve``): a producer, never Celery.

Datadog's DORA write API in front of the stream: ``app`` (routes), ``request`` (parsing a
body into an event), ``keys`` (who may post), ``jsonapi`` (errors as Datadog shapes them).
"""
