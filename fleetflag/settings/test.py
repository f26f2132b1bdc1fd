"""Overrides for the test run: fast hashing; everything else as the environment says."""

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The tests' own signing key (public: it signs nothing outside a test run); tests that need a
# keyring file or other keys override these (tests/signing/).
SIGNING_KEY = "G931Gfcyy8he5NnhkWwp4r3cxhu-gkXoBRH-P7LPHZE="
SIGNING_KEY_FILE = ""
SIGNING_OLD_PUBLIC_KEYS: list[str] = []
