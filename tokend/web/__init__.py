"""The embedded HTTP server: health, loop status, metrics, admin API, log stream, terminal."""

from tokend.web.app import create_app

__all__ = ["create_app"]
