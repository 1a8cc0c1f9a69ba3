"""tokend keeps OAuth access tokens fresh for many seller accounts."""
