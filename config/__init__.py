"""Settings of dora-forwarder, read from the environment (see the README's configuration table)."""

from config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
