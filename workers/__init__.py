"""dora-forwarder's workers: the Celery app and its task (``celery -A workers worker``).

The app is built on first access from the environment's settings, so importing this
package (e.g. for the CLI) costs nothing and a bad setting fails with its variable's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.tasks import ForwarderCelery

__all__ = ["app"]

_app: ForwarderCelery | None = None


def __getattr__(name: str) -> Any:
    global _app  # noqa: PLW0603 - the module's one lazily built app
    if name not in {"app", "celery"}:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    if _app is None:
        from config import SettingsError, load_settings  # noqa: PLC0415
        from workers.celery_app import create_app  # noqa: PLC0415

        try:
            _app = create_app(load_settings())
        except SettingsError as exc:
            raise SystemExit(f"dora-forwarder: {exc}") from None
    return _app
