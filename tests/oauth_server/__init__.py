"""A Django OAuth Toolkit authorization server for the interop tests, run on loopback."""
