"""Running it: metrics, logs, status, dead letters, start-up checks, embedded Redis, children."""
