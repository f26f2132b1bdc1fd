"""FleetFlag settings, from environment variables with embedded defaults.

Embedded defaults (a fresh machine, ``make run``): SQLite under ``var/``, an in-memory
channel layer, local-memory cache, jobs run in-process. Set ``DATABASE_URL``
(``postgres://...``), ``REDIS_URL`` and ``CLICKHOUSE_URL`` for the real services.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("FLEETFLAG_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# The embedded default is for a developer machine; production must set its own.
SECRET_KEY = os.environ.get("SECRET_KEY", "fleetflag-insecure-development-key-change-me-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_rq",
    "guardian",
    "audit",
    "accounts",
    "flags",
    "vehicles",
    "experiments",
    "realtime",
]

MIDDLEWARE = [
    # Async-only and outermost: body limit, metrics, and the hot API paths (core.http.edge).
    "core.http.edge.ApiEdgeMiddleware",
    "core.http.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fleetflag.urls"
ASGI_APPLICATION = "fleetflag.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'fleetflag.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
CLICKHOUSE_URL = os.environ.get("CLICKHOUSE_URL", "")

if REDIS_URL:
    # Django's RedisCache opens a pool per backend object, i.e. per ASGI request: share them.
    CACHES = {"default": {"BACKEND": "core.redis.SharedPoolRedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py's 5 s socket timeout drops idle consumers (channels_redis #422).
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 1000}]},
        }
    }
    RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "fleetflag"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    RQ_QUEUES = {"default": {"URL": "redis://embedded/0", "ASYNC": False}}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "admin:login"

# Governance
CHANGE_REQUEST_TTL_HOURS = int(os.environ.get("CHANGE_REQUEST_TTL_HOURS", "72"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# REST API (docs/api.md)
API_MAX_BODY_BYTES = int(os.environ.get("API_MAX_BODY_BYTES", str(1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# Rules per flag: each one costs every evaluation of the flag, on the server and the vehicles.
FLAG_MAX_RULES = int(os.environ.get("FLAG_MAX_RULES", "100"))
# JSON bodies nested deeper are refused (400 parse_error) by core.http.body.
API_MAX_JSON_DEPTH = int(os.environ.get("API_MAX_JSON_DEPTH", "32"))
API_KEY_CACHE_SECONDS = int(os.environ.get("API_KEY_CACHE_SECONDS", "60"))
API_KEY_LOCAL_CACHE_SECONDS = float(os.environ.get("API_KEY_LOCAL_CACHE_SECONDS", "2"))
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# The hot API paths reuse the snapshot ETag they read for this long (seconds) per process.
SNAPSHOT_LOCAL_SECONDS = float(os.environ.get("SNAPSHOT_LOCAL_SECONDS", "1"))
# Garbage-collector thresholds for the server process (flags/api/asgi.py; Python's default is 700,10,10).
GC_THRESHOLDS = tuple(int(n) for n in os.environ.get("GC_THRESHOLDS", "700,10,1000").split(","))
# evaluate/batch answers kept per process and snapshot, by (VIN, context, flag keys); 0 turns it off.
API_BATCH_CACHE_BYTES = int(os.environ.get("API_BATCH_CACHE_BYTES", str(16 * 1024 * 1024)))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.ApiAccess"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.http.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.http.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "URL_FORMAT_OVERRIDE": None,  # ?format= belongs to the audit export
    "DATETIME_FORMAT": "iso-8601",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "FleetFlag API",
    "DESCRIPTION": (
        "Feature flags for vehicle fleets: flags, rules, kill switches, ASIL-D change requests, evaluation, "
        "vehicle sync, audit, and OpenFeature remote evaluation (OFREP). Authenticate with "
        "`Authorization: Bearer <api key>`. Errors: `{\"error\": {\"code\", \"message\", \"fields\"?, "
        "\"request_id\"}}`. See docs/api.md."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "EnvironmentEnum": "flags.models.Environment",
        "SafetyLevelEnum": "flags.models.SafetyLevel",
        "FlagTypeEnum": "flags.models.FlagType",
        "RuleTypeEnum": "flags.models.RuleType",
    },
}


# -- Audit trail MAC keys (audit/, docs/audit.md "Keys") ------------------------------------
# The audit chain is keyed with HMAC-SHA256 (audit.models). The key is what an insider with
# the database's rights does not have, so it never goes into the database: it comes from
# the environment or from a file (a mounted secret). Every entry records the id (kid) of the
# key that MACed it; older keys stay configured by kid for as long as their entries are kept.
#
#   AUDIT_HMAC_KEY            the current key (32 characters or more), or
#   AUDIT_HMAC_KEY_FILE       a file holding it (surrounding whitespace ignored)
#   AUDIT_HMAC_KID            the current key's id (default "k1"; [A-Za-z0-9._-], at most 32)
#   AUDIT_HMAC_OLD_KEYS       older keys: "kid:key,kid:key"
#   AUDIT_HMAC_OLD_KEYS_FILE  older keys, one "kid:key" a line (# comments and blank lines ignored)
#   AUDIT_LEGACY_LAST_SEQ     the last entry made before keyed MACs (plain SHA-256), default 0
#
# Without a key, a fresh machine (`make run`) uses the embedded development key under kid
# "dev": its value is in this file, so it protects nothing; verify_audit and
# `check --deploy` say so. That key is never accepted next to a configured one.
AUDIT_HMAC_DEV_KID = "dev"
AUDIT_HMAC_DEV_KEY = "fleetflag-insecure-development-audit-key-do-not-use-in-production"
AUDIT_HMAC_MIN_KEY_LENGTH = 32


def audit_hmac_settings(environ: dict[str, str] | os._Environ[str]) -> tuple[str, dict[str, str], bool]:
    """(current kid, every configured key by kid, whether it is the development key)."""
    import re

    from django.core.exceptions import ImproperlyConfigured

    kid_pattern = re.compile(r"^[A-Za-z0-9._-]{1,32}$")

    def checked(kid: str, key: str, source: str) -> tuple[str, str]:
        if not kid_pattern.match(kid):
            raise ImproperlyConfigured(f"{source}: key id {kid!r} must match [A-Za-z0-9._-]{{1,32}}")
        if kid == AUDIT_HMAC_DEV_KID or key == AUDIT_HMAC_DEV_KEY:
            raise ImproperlyConfigured(f"{source}: the development audit key is public and cannot be configured")
        if len(key) < AUDIT_HMAC_MIN_KEY_LENGTH:
            raise ImproperlyConfigured(f"{source}: audit key {kid!r} is shorter than {AUDIT_HMAC_MIN_KEY_LENGTH}")
        return kid, key

    key = environ.get("AUDIT_HMAC_KEY", "")
    key_file = environ.get("AUDIT_HMAC_KEY_FILE", "")
    if key and key_file:
        raise ImproperlyConfigured("set AUDIT_HMAC_KEY or AUDIT_HMAC_KEY_FILE, not both")
    if key_file:
        # A missing or unreadable file fails start-up: falling back to the development key
        # would silently make every new entry forgeable.
        key = Path(key_file).read_text(encoding="utf-8").strip()
    kid = environ.get("AUDIT_HMAC_KID", "")
    old_lines = [item for item in environ.get("AUDIT_HMAC_OLD_KEYS", "").split(",") if item.strip()]
    old_file = environ.get("AUDIT_HMAC_OLD_KEYS_FILE", "")
    if old_file:
        old_lines += [
            line for line in Path(old_file).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not key:
        if kid or old_lines:
            raise ImproperlyConfigured("AUDIT_HMAC_KID / AUDIT_HMAC_OLD_KEYS are set but there is no AUDIT_HMAC_KEY")
        return AUDIT_HMAC_DEV_KID, {AUDIT_HMAC_DEV_KID: AUDIT_HMAC_DEV_KEY}, True
    current_kid, current_key = checked(kid or "k1", key, "AUDIT_HMAC_KEY")
    keys = {current_kid: current_key}
    for line in old_lines:
        old_kid, separator, old_key = (part.strip() for part in line.partition(":"))
        if not separator:
            raise ImproperlyConfigured("AUDIT_HMAC_OLD_KEYS: each entry is kid:key")
        old_kid, old_key = checked(old_kid, old_key, "AUDIT_HMAC_OLD_KEYS")
        if old_kid in keys:
            raise ImproperlyConfigured(f"AUDIT_HMAC_OLD_KEYS: key id {old_kid!r} is configured twice")
        keys[old_kid] = old_key
    return current_kid, keys, False


AUDIT_HMAC_KID, AUDIT_HMAC_KEYS, AUDIT_HMAC_DEV_KEY_IN_USE = audit_hmac_settings(os.environ)
AUDIT_LEGACY_LAST_SEQ = int(os.environ.get("AUDIT_LEGACY_LAST_SEQ", "0"))
# -- end of the audit trail MAC keys ----------------------------------------------------------

# -- Vehicle websocket and push (docs/realtime.md, docs/scaling.md) -------------------------
# Prefix of the Redis names the push channel and presence use (parallel runs on one Redis
# set their own).
PUSH_PREFIX = os.environ.get("PUSH_PREFIX", "ff")
# Every server process compares its sockets' versions with the database this often and sends
# what they missed (a publish lost while Redis was down, a process that was resubscribing).
PUSH_SWEEP_SECONDS = float(os.environ.get("PUSH_SWEEP_SECONDS", "10"))
# Presence: a process writes what its sockets saw to Redis at most this often, and to the
# database (Vehicle.status, last_seen_at, telemetry) at most this often; a vehicle not
# refreshed for the timeout (its process died) is taken offline by any process.
PRESENCE_FLUSH_SECONDS = float(os.environ.get("PRESENCE_FLUSH_SECONDS", "2"))
PRESENCE_DB_FLUSH_SECONDS = float(os.environ.get("PRESENCE_DB_FLUSH_SECONDS", "5"))
PRESENCE_TIMEOUT_SECONDS = float(os.environ.get("PRESENCE_TIMEOUT_SECONDS", "90"))
# Acknowledgements and sent counts are written in batches this often.
ACK_FLUSH_SECONDS = float(os.environ.get("ACK_FLUSH_SECONDS", "1"))
# A text frame larger than this gets an ERROR frame (daphne itself closes past 1 MiB).
WS_MAX_FRAME_BYTES = int(os.environ.get("WS_MAX_FRAME_BYTES", str(64 * 1024)))
# More than WS_MALFORMED_LIMIT malformed frames within WS_MALFORMED_WINDOW_SECONDS: close 4400.
WS_MALFORMED_LIMIT = int(os.environ.get("WS_MALFORMED_LIMIT", "10"))
WS_MALFORMED_WINDOW_SECONDS = float(os.environ.get("WS_MALFORMED_WINDOW_SECONDS", "60"))

# -- Payload signing keys (core/signing.py, docs/operations.md "Signing keys") ----------------
# Snapshots and KILL_SWITCH / FLAG_UPDATE frames are signed with Ed25519 (SPEC §4 "Signed
# payloads"). The private key never goes into the database; it comes from
#
#   SIGNING_KEY_FILE         a keyring file (a mounted secret, mode 0600) that
#                            `manage.py signing_key generate|rotate` writes: one active key,
#                            older ones listed inactive (public half only); or
#   SIGNING_KEY              the active private key itself: base64url of its 32 raw bytes
#   SIGNING_OLD_PUBLIC_KEYS  with SIGNING_KEY: older public keys, comma-separated, listed inactive
#
# Without either, a fresh machine (`make run`) generates a development keyring at
# SIGNING_DEV_KEY_FILE on first use (mode 0600) and logs a warning; `check --deploy` says so,
# because every server of one fleet must sign with the same keys. Running processes re-read a
# keyring file when it changes; SIGNING_KEY changes need a restart.
SIGNING_KEY = os.environ.get("SIGNING_KEY", "")
SIGNING_KEY_FILE = os.environ.get("SIGNING_KEY_FILE", "")
SIGNING_OLD_PUBLIC_KEYS = env_list("SIGNING_OLD_PUBLIC_KEYS", "")
SIGNING_DEV_KEY_FILE = VAR_DIR / "signing-keys.dev.json"
if SIGNING_KEY and SIGNING_KEY_FILE:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("set SIGNING_KEY or SIGNING_KEY_FILE, not both")
# -- end of the payload signing keys ----------------------------------------------------------

# -- Kill-switch notifications (flags/notifications.py, docs/operations.md "Kill-switch webhooks")
# Webhook URLs (Slack incoming webhooks, Microsoft Teams connectors), comma-separated; empty:
# no notifications. Each gets one JSON POST per engage and per lift, sent in the background
# after commit (an RQ job behind Redis, a thread in the embedded default): never in the way of
# the kill switch.
KILL_SWITCH_WEBHOOK_URLS = env_list("KILL_SWITCH_WEBHOOK_URLS", "")
# Seconds one POST may take (connect and answer) before it counts as failed and is retried.
KILL_SWITCH_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("KILL_SWITCH_WEBHOOK_TIMEOUT_SECONDS", "5"))
# Seconds before each retry after a failure (rq.Retry): five retries over about 20 minutes.
KILL_SWITCH_WEBHOOK_RETRY_INTERVALS = [
    int(seconds) for seconds in env_list("KILL_SWITCH_WEBHOOK_RETRY_INTERVALS", "10,30,120,300,900")]
# Where people reach this admin: the links in notifications start with it.
FLEETFLAG_PUBLIC_URL = os.environ.get("FLEETFLAG_PUBLIC_URL", "http://127.0.0.1:8000")
