"""Test doubles of external services, runnable by hand (``python -m service.offline.testing.<name>``)."""
