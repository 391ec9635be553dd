"""The Lua scripts the workers run in Redis (package data)."""
