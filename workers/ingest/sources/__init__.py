"""Webhook sources: Alertmanager, PagerDuty, GitHub and GitLab post straight to ``serve``.

Each source maps its system's own notification to the forwarder's events at the edge
(pure modules, one per source) and enqueues them like any producer; nothing behind the
stream knows where an event came from. ``endpoints`` is the HTTP side: auth, body, XADD.
"""
