"""Datadog's field rules, for code that builds events from another system's data (the
webhook sources of ``serve``): the id rule, a custom tag, timestamps as Datadog reads them."""

from forwarder._identity import ID_PATTERN
from forwarder._models import MAX_CUSTOM_TAGS, MAX_TEXT_CHARS, CustomTag
from forwarder._timestamps import to_nanoseconds

__all__ = ["ID_PATTERN", "MAX_CUSTOM_TAGS", "MAX_TEXT_CHARS", "CustomTag", "to_nanoseconds"]
