"""Overrides for the test run: fast hashing; everything else as the environment says."""

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
