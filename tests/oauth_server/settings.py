"""Settings of the test authorization server: rotation and reuse protection on, short
access tokens, everything local. Values the tests vary come from the environment."""

import os

SECRET_KEY = "tokend-interop-tests-only"  # a throwaway server on loopback
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "oauth_server.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["OAUTH_SERVER_DB"],
        # Concurrent refreshes write at once: take the write lock up front and wait for
        # it, instead of failing when a read transaction cannot be upgraded.
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL;"},
    }
}
# Fast hashing: the users and secrets here are throwaway.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/login/"
LOGGING = {  # server errors go to the log file the tests keep
    "version": 1,
    "disable_existing_loggers": True,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}

OAUTH2_PROVIDER = {
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("OAUTH_SERVER_TOKEN_SECONDS", "20")),
    "PKCE_REQUIRED": True,
    "SCOPES": {"read": "Read", "write": "Write", "introspection": "Introspect tokens"},
    "DEFAULT_SCOPES": ["read"],
}
