"""Settings, all from environment variables (django-environ).

Local defaults work on a development machine; `bin/setup` writes a `.env` with a
random SECRET_KEY and DEBUG=true. Production must set SECRET_KEY and DEBUG=false.
"""

import datetime as dt
import ipaddress
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from marketplace.policy import OrderPolicy

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is not set: run bin/setup (writes .env) or export SECRET_KEY")
if not DEBUG and (SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 40):
    raise ImproperlyConfigured("refusing to start with DEBUG=false and a debug or short SECRET_KEY")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.gis",
    "rest_framework",
    "rest_framework_gis",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "drf_standardized_errors",
    "guardian",
    "marketplace",
    "insights",
    "billing",
    "pipeline",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "marketplace.urls"
WSGI_APPLICATION = "marketplace.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {"default": env.db("DATABASE_URL", default="postgis://root@127.0.0.1:5432/footfall")}
# Ten minutes: a new connection's first PostGIS query costs its backend 0.1-0.2 s (PostGIS and
# PROJ set up), which every web thread and worker process paid again each minute at 60.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The test database is cloned from a template that already has PostGIS, so the
# test run needs no superuser to create the extension.
DATABASES["default"]["TEST"] = {"TEMPLATE": env("DATABASE_TEST_TEMPLATE", default="footfall_template")}
# A backend whose client died (a killed worker) notices within 5 s even while it
# waits on a lock, and so releases the report's advisory lock promptly.
# No JIT: a report's query is costed above jit_above_cost and compiling it took 20 ms of a
# shopping centre's 50 and 190 ms of a whole metro's 750, more than it ever saved (bench/).
DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c client_connection_check_interval=5000 -c jit=off"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="footfall"),
    }
}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: the API has no anonymous access

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The buyers' page at / (marketplace/web, docs/web.md). Its map and chart libraries come from the
# npm registry (web/package.json): `npm ci` there (bin/setup) copies the few dist files it loads
# to web/dist/, served as static files like the page's own script. No internet at run time.
INSTALLED_APPS += ["marketplace.web"]
STATICFILES_DIRS = [BASE_DIR / "web" / "dist"]
# Base map tiles under the page's map, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (the
# page's Content-Security-Policy then allows images from that host); empty: none, the map shows
# the regions' outlines and the report's grid cells on a plain background.
WEB_MAP_TILE_URL = env("WEB_MAP_TILE_URL", default="")
WEB_MAP_TILE_ATTRIBUTION = env("WEB_MAP_TILE_ATTRIBUTION", default="")
# Debian 12 ships GDAL 3.6, which cannot sandbox file access. Buyer geometry never reaches
# GDAL: the API builds it with GEOS from checked coordinates.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]

# --- REST API -----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["marketplace.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_standardized_errors.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "drf_standardized_errors.handler.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["marketplace.api.throttling.TenantRateThrottle"],
    "URL_FORMAT_OVERRIDE": None,
}
DRF_STANDARDIZED_ERRORS = {
    "EXCEPTION_HANDLER_CLASS": "marketplace.api.errors.ServiceErrorHandler",
    "EXCEPTION_FORMATTER_CLASS": "marketplace.api.errors.ErrorFormatter",
    "ENABLE_IN_DEBUG_FOR_UNHANDLED_EXCEPTIONS": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Footfall marketplace API",
    "DESCRIPTION": (
        "Order privacy-safe footfall reports over areas you draw. Authenticate with "
        "`Authorization: Api-Key <key>`. Every error has the shape "
        "`{type, code, message, errors: [{code, detail, attr}]}`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ValidationErrorEnum": "drf_standardized_errors.openapi_serializers.ValidationErrorEnum.choices",
        "ClientErrorEnum": "drf_standardized_errors.openapi_serializers.ClientErrorEnum.choices",
        "ServerErrorEnum": "drf_standardized_errors.openapi_serializers.ServerErrorEnum.choices",
        "ReportStatusEnum": "marketplace.models.Report.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_standardized_errors.openapi_hooks.postprocess_schema_enums",
        "marketplace.api.errors.document_code_and_message",
    ],
}

# --- Celery (RabbitMQ broker; the database is the source of truth) -------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//")
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", default="footfall")
# Calls to the outside world (buyers' webhooks, Stripe) have their own queue and worker pool,
# so a slow endpoint never holds a report: `celery worker -Q <CELERY_QUEUE>` computes reports,
# `celery worker -Q <CELERY_QUEUE>-outbound` sends (bin/run and docker/compose.yaml start both).
OUTBOUND_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-outbound"
CELERY_TASK_QUEUES = [
    Queue(CELERY_TASK_DEFAULT_QUEUE, durable=True),
    Queue(OUTBOUND_QUEUE, Exchange(OUTBOUND_QUEUE), routing_key=OUTBOUND_QUEUE, durable=True),
]
CELERY_TASK_ROUTES = {
    name: {"queue": OUTBOUND_QUEUE}
    for name in (
        "marketplace.tasks.deliver_webhook",
        "marketplace.tasks.sweep_webhook_deliveries",
        "billing.tasks.sync_usage",
        "billing.tasks.sync_due_usage",
        "billing.tasks.close_last_month",
        # Short bookkeeping that must not wait behind long reports: the outbox relay, the sweeper.
        "marketplace.tasks.publish_pending_reports",
        "insights.tasks.sweep_stuck_reports",
    )
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery would close the database connection before and after every task: a new PostgreSQL
# connection (and PostGIS's type lookups) per task. Instead, as Django does per request, a
# connection is kept while it works and is younger than CONN_MAX_AGE (marketplace/celery.py).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE = {
    # The name it was registered under; the task itself is marketplace.tasks.sweep_stuck_reports.
    "sweep-stuck-reports": {"task": "insights.tasks.sweep_stuck_reports", "schedule": 60.0},
    "drop-old-data": {"task": "insights.tasks.drop_old_data", "schedule": 24 * 3600.0},
    "sync-usage-to-stripe": {"task": "billing.tasks.sync_due_usage", "schedule": 60.0},
    "sweep-webhook-deliveries": {"task": "marketplace.tasks.sweep_webhook_deliveries", "schedule": 60.0},
    "close-billing-month": {
        "task": "billing.tasks.close_last_month",
        "schedule": crontab(minute=0, hour=6, day_of_month=1),
    },
}

# --- Product rules ---------------------------------------------------------------
GRID_RESOLUTION_M = 250
AREA_MIN_KM2 = env.float("AREA_MIN_KM2", default=0.25)
AREA_MAX_KM2 = env.float("AREA_MAX_KM2", default=1500.0)
# A result with more rows than this is not inlined in GET /reports/{id}/: page through
# /reports/{id}/rows/ or download it (downloads stream from the database).
RESULT_INLINE_MAX_ROWS = env.int("RESULT_INLINE_MAX_ROWS", default=2000)
# The day rollup is kept in this zone (the operator's; weeks and months are summed from its
# days); reports in another zone are computed from the hourly data.
ROLLUP_TIME_ZONE = env("ROLLUP_TIME_ZONE", default="Europe/Berlin")
# The billing month, for every tenant whatever its own zone: a calendar month here (the
# seller's zone; docs/billing.md). Tiers, minimums, spending limits, GET /usage/, the close,
# exports and reconciliation all use it.
BILLING_TIME_ZONE = env("BILLING_TIME_ZONE", default="Europe/Berlin")
# The seller's country and its standard VAT rate (percent): domestic customers pay it; other
# EU businesses with a VAT ID are reverse charged; customers outside the EU pay none.
BILLING_SELLER_COUNTRY = env("BILLING_SELLER_COUNTRY", default="DE")
BILLING_VAT_RATE = env("BILLING_VAT_RATE", default="19.00")
# A worker sending a usage line holds it this long; after it, another worker may send it again
# (with the same idempotency key). Longer than STRIPE_TIMEOUT_SECONDS.
BILLING_SYNC_LEASE_SECONDS = env.int("BILLING_SYNC_LEASE_SECONDS", default=120)
STRIPE_TIMEOUT_SECONDS = env.int("STRIPE_TIMEOUT_SECONDS", default=30)
# The tests' localstripe lacks parts of Stripe's current API (billing/stripe_gateway.py).
STRIPE_LOCALSTRIPE = env.bool("STRIPE_LOCALSTRIPE", default=False)
# Stripe: usage lines are sent as invoice items to each tenant's customer. Without a secret
# key nothing is sent; the lines wait in the outbox (billing.UsageSync) until there is one.
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_API_BASE = env("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
# The monthly plan every tenant's subscription holds (0 a month: reports are billed as invoice items).
STRIPE_PLAN_ID = env("STRIPE_PLAN_ID", default="footfall-reports")
# After a failed invoice payment, new orders are refused (403) once this many days have passed.
BILLING_PAYMENT_GRACE_DAYS = env.int("BILLING_PAYMENT_GRACE_DAYS", default=7)
# The retention command drops whole months of data older than this.
DATA_RETENTION_DAYS = env.int("DATA_RETENTION_DAYS", default=730)
# The release policy (docs/privacy.md): what is published of every dataset version. A change
# takes effect when `manage.py build_releases` has built the releases under it.
PRIVACY_K = env.int("PRIVACY_K", default=10)  # a value under k is withheld
PRIVACY_ROUND_TO = env.int("PRIVACY_ROUND_TO", default=5)  # released counts are rounded to this base
PRIVACY_MIN_CELLS = env.int("PRIVACY_MIN_CELLS", default=4)  # an area covers at least this many grid cells
PRIVACY_NOISE_SCALE = env.float("PRIVACY_NOISE_SCALE", default=0.0)  # sticky Laplace noise, in people; 0: off
PRIVACY_NOISE_SECRET = env("PRIVACY_NOISE_SECRET", default="") or f"noise:{SECRET_KEY}"
# Order-time product policy; a product may set its own.
PRIVACY_QUERY_BUDGET = env.int("PRIVACY_QUERY_BUDGET", default=50)  # fair use: overlapping orders per tenant
if AREA_MAX_KM2 <= AREA_MIN_KM2:
    raise ImproperlyConfigured("need AREA_MIN_KM2 < AREA_MAX_KM2")
try:  # bad privacy parameters refuse to start
    OrderPolicy(min_area_km2=AREA_MIN_KM2, min_cells=PRIVACY_MIN_CELLS, query_budget=PRIVACY_QUERY_BUDGET)
    if PRIVACY_K < 2 or PRIVACY_ROUND_TO < 1 or PRIVACY_NOISE_SCALE < 0:
        raise ValueError(
            f"need PRIVACY_K >= 2, PRIVACY_ROUND_TO >= 1 and PRIVACY_NOISE_SCALE >= 0,"
            f" got {PRIVACY_K}, {PRIVACY_ROUND_TO} and {PRIVACY_NOISE_SCALE}"
        )
except ValueError as exc:
    raise ImproperlyConfigured(f"privacy settings: {exc}") from None
# Per tenant: API requests a minute (429 with Retry-After beyond), and reports queued or
# running at once.
API_REQUESTS_PER_MINUTE = env.int("API_REQUESTS_PER_MINUTE", default=600)
MAX_REPORTS_IN_PROGRESS = env.int("MAX_REPORTS_IN_PROGRESS", default=10)
REPORTS_IN_PROGRESS_RETRY_SECONDS = 30
# How long a quote's price holds for an order of the same body.
QUOTE_VALID_FOR = dt.timedelta(hours=env.int("QUOTE_VALID_HOURS", default=24))
# Buyer webhooks (docs/webhooks.md). URLs must be https://, unless WEBHOOK_ALLOW_HTTP is set
# (local development and tests), and their hosts must resolve to public internet addresses:
# WEBHOOK_ALLOWED_HOSTS lets named hosts, addresses or networks through anyway, for development
# and tests only (e.g. "127.0.0.1,localhost" for a fake receiver, "172.16.0.0/12" for compose).
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=False)
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
# One delivery, from the DNS lookup to the answer's status and first bytes, takes at most this long.
WEBHOOK_DEADLINE_SECONDS = env.float("WEBHOOK_DEADLINE_SECONDS", default=10.0)
# Per tenant: endpoints registered, and deliveries being sent at once (the others wait their turn).
WEBHOOK_MAX_ENDPOINTS = env.int("WEBHOOK_MAX_ENDPOINTS", default=10)
# Keep the in-flight cap well under the outbound pool (bin/run and docker/: 8 threads).
WEBHOOK_MAX_IN_FLIGHT = env.int("WEBHOOK_MAX_IN_FLIGHT", default=2)
if WEBHOOK_DEADLINE_SECONDS <= 0 or WEBHOOK_MAX_ENDPOINTS < 1 or WEBHOOK_MAX_IN_FLIGHT < 1:
    raise ImproperlyConfigured(
        "need WEBHOOK_DEADLINE_SECONDS > 0, WEBHOOK_MAX_ENDPOINTS >= 1, WEBHOOK_MAX_IN_FLIGHT >= 1"
    )
# Deliveries carry the Standard Webhooks headers; the old Footfall-Signature and Footfall-Delivery
# headers go along with them on tries before this day (UTC), so receivers written for them keep
# working while buyers move over (docs/webhooks.md). A past day stops them now.
WEBHOOK_LEGACY_HEADERS_UNTIL = dt.date.fromisoformat(env("WEBHOOK_LEGACY_HEADERS_UNTIL", default="2027-03-01"))
# A report still queued this long after it was (re-)queued is sent to the broker again.
REPORT_REQUEUE_AFTER_SECONDS = env.int("REPORT_REQUEUE_AFTER_SECONDS", default=600)
# A worker that finds a report locked by another worker retries after this many seconds.
REPORT_LOCK_RETRY_SECONDS = env.int("REPORT_LOCK_RETRY_SECONDS", default=5)

# --- The operator's opt-out registry (pipeline/, the reference anonymization pipeline) ------
# Numbers are kept only as HMACs under this secret, and the pipeline hashes its subscribers'
# numbers with it to drop the opted-out ones: set it explicitly in production and never change
# it alone (every stored hash would stop matching, and opted-out numbers would count again).
OPTOUT_NUMBER_SECRET = env("OPTOUT_NUMBER_SECRET", default="") or f"optout:{SECRET_KEY}"
OPTOUT_DEFAULT_COUNTRY_CODE = env("OPTOUT_DEFAULT_COUNTRY_CODE", default="49")  # for national numbers (0151...)
OPTOUT_CODE_TTL_SECONDS = env.int("OPTOUT_CODE_TTL_SECONDS", default=600)
OPTOUT_CODE_REQUESTS_PER_HOUR = env.int("OPTOUT_CODE_REQUESTS_PER_HOUR", default=3)  # per number
OPTOUT_CODE_ATTEMPTS = env.int("OPTOUT_CODE_ATTEMPTS", default=5)  # wrong entries before a code stops working
OPTOUT_SESSION_SECONDS = env.int("OPTOUT_SESSION_SECONDS", default=900)  # a verified number's page stays open
SMS_GATEWAY = env("SMS_GATEWAY", default="console")  # console (log) or file (JSON lines in SMS_OUTBOX_FILE)
SMS_OUTBOX_FILE = env.path("SMS_OUTBOX_FILE", default=BASE_DIR / "var" / "sms" / "outbox.jsonl")
if SMS_GATEWAY not in ("console", "file"):
    raise ImproperlyConfigured(f"SMS_GATEWAY must be console or file, got {SMS_GATEWAY!r}")

# --- Production hardening (only when DEBUG is off) ---------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)  # a year
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading is hard to undo (browsers ship the list): only when the operator asks for it.
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS += ["security.W021"]  # "not preloaded" is the choice above
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Observability (docs/operations.md) ---------------------------------------------
# Log lines as JSON objects (production, docker) or as text (a terminal; the default with
# DEBUG, as bin/setup's .env has it). Both carry request_id, tenant, report_id and task_id.
LOG_FORMAT = env("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "marketplace.observability.logs.LogContextFilter"}},
    "formatters": {
        "json": {"()": "marketplace.observability.logs.JsonFormatter"},
        "text": {"()": "marketplace.observability.logs.TextFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["log_context"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # One line a request (marketplace.requests) says it all; Django's own adds only noise.
    "loggers": {"django.request": {"level": "ERROR"}},
}
# First, so that its request id and timing cover every other middleware.
MIDDLEWARE.insert(0, "marketplace.observability.middleware.RequestObservabilityMiddleware")
# GET /metrics (Prometheus): with `Authorization: Bearer <METRICS_TOKEN>`, or from these
# networks (the direct peer's address: behind a proxy on the same host, use the token).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"] if DEBUG else [])
try:
    for network in METRICS_ALLOWED_NETWORKS:
        ipaddress.ip_network(network)
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None
# What a scrape may spend: per database read, and per broker connect and answer.
METRICS_STATEMENT_TIMEOUT_MS = env.int("METRICS_STATEMENT_TIMEOUT_MS", default=2000)
METRICS_BROKER_TIMEOUT_SECONDS = env.float("METRICS_BROKER_TIMEOUT_SECONDS", default=1.0)

# --- Outages: what a database, broker or Redis that is down or slow may cost -----------------
# Orders are kept in the database and their messages sent by the outbox (marketplace/services/
# outbox.py): a request waits at most this long on a broker that does not answer, and after a
# failure leaves sending to the relay (every OUTBOX_RELAY_SECONDS) for BROKER_RETRY_AFTER_SECONDS.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("BROKER_CONNECT_TIMEOUT_SECONDS", default=1.0)
# Publisher confirms: a message counts as sent only when the broker says it has it (a broker that
# hangs and then drops the connection would otherwise swallow what it was sent meanwhile).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "write_timeout": env.float("BROKER_WRITE_TIMEOUT_SECONDS", default=2.0),
    "confirm_publish": True,
}
BROKER_CONFIRM_TIMEOUT_SECONDS = env.float("BROKER_CONFIRM_TIMEOUT_SECONDS", default=2.0)
BROKER_RETRY_AFTER_SECONDS = env.float("BROKER_RETRY_AFTER_SECONDS", default=10.0)
OUTBOX_RELAY_SECONDS = env.float("OUTBOX_RELAY_SECONDS", default=2.0)
CELERY_BEAT_SCHEDULE["publish-pending-reports"] = {
    "task": "marketplace.tasks.publish_pending_reports",
    "schedule": OUTBOX_RELAY_SECONDS,
}
# A report claimed this many times without finishing (its query fails, or its worker dies) fails.
REPORT_MAX_ATTEMPTS = env.int("REPORT_MAX_ATTEMPTS", default=5)
# The database: connections give up quickly, and the API answers 503 with Retry-After.
DATABASES["default"]["OPTIONS"]["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT_SECONDS", default=3)
DATABASE_RETRY_AFTER_SECONDS = 5
# Redis holds only the rate limiter's counters and caches: when it is down, they fail open (logged).
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
CACHES["default"]["OPTIONS"] = {
    "SOCKET_CONNECT_TIMEOUT": env.float("REDIS_TIMEOUT_SECONDS", default=0.5),
    "SOCKET_TIMEOUT": env.float("REDIS_TIMEOUT_SECONDS", default=0.5),
}
# The decoded months report workers share through Redis (insights/shared.py): where (empty: not
# shared), under which prefix, for how long, at most how many bytes written per that long (so
# at most twice that held), how long a call may wait, and how long after a failure Redis is left alone.
SHARED_MONTHS_URL = env("SHARED_MONTHS_URL", default=REDIS_URL)
SHARED_MONTHS_PREFIX = env("SHARED_MONTHS_PREFIX", default=f"{CACHES['default']['KEY_PREFIX']}:months")
SHARED_MONTHS_TTL_SECONDS = env.int("SHARED_MONTHS_TTL_SECONDS", default=24 * 3600)
SHARED_MONTHS_BYTES = env.int("SHARED_MONTHS_BYTES", default=256 * 2**20)
SHARED_MONTHS_TIMEOUT_SECONDS = env.float("SHARED_MONTHS_TIMEOUT_SECONDS", default=0.05)
SHARED_MONTHS_RETRY_SECONDS = env.float("SHARED_MONTHS_RETRY_SECONDS", default=10.0)
# The node's own copy of each kind's most recent months, LOCAL_MONTHS of hours and
# LOCAL_DAY_MONTHS of the day rollup, as files its report workers map (insights/local_months.py):
# where (empty: no copy), and how long writing it after a release may take. About 5 B per
# cell-hour of the copied months of hours and 9 B per cell-day of days, on the node's local disk.
LOCAL_MONTHS_DIR = env("LOCAL_MONTHS_DIR", default=str(BASE_DIR / "var" / "local-months"))
LOCAL_MONTHS = env.int("LOCAL_MONTHS", default=4)
LOCAL_DAY_MONTHS = env.int("LOCAL_DAY_MONTHS", default=13)
LOCAL_MONTHS_SECONDS = env.int("LOCAL_MONTHS_SECONDS", default=600)
# Report workers listen for changes to the releases (insights/catalogue.py) instead of asking
# their state each report; off: they ask every report.
CATALOGUE_LISTEN = env.bool("CATALOGUE_LISTEN", default=True)
# After a release, the rolling orders of the last REPORT_WARMUP_DAYS ordered most (at most
# REPORT_WARMUP_AREAS, for about REPORT_WARMUP_SECONDS of one worker's time, from the latest
# REPORT_WARMUP_REPORTS_READ reports) are computed once into the shared months
# (marketplace/services/warmup.py); 0 areas turns it off.
REPORT_WARMUP_AREAS = env.int("REPORT_WARMUP_AREAS", default=50)
REPORT_WARMUP_DAYS = env.int("REPORT_WARMUP_DAYS", default=28)
REPORT_WARMUP_SECONDS = env.float("REPORT_WARMUP_SECONDS", default=20.0)
REPORT_WARMUP_REPORTS_READ = env.int("REPORT_WARMUP_REPORTS_READ", default=5000)
# What the warm-up writes to the shared months, and the entries there it reads, live until about
# the next weekly release (8 days), with at most REPORT_WARMUP_BYTES written or kept a window.
REPORT_WARMUP_TTL_SECONDS = env.int("REPORT_WARMUP_TTL_SECONDS", default=8 * 24 * 3600)
REPORT_WARMUP_BYTES = env.int("REPORT_WARMUP_BYTES", default=64 * 2**20)
# Admission: at most this many orders and quotes are checked at once, service-wide, and no
# order is taken while this many reports wait or run; past either, 503 with Retry-After.
ORDER_ADMISSION_SLOTS = env.int("ORDER_ADMISSION_SLOTS", default=8)
MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE = env.int("MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE", default=2000)
ADMISSION_RETRY_AFTER_SECONDS = 2
# With every slot taken, an order or quote waits this long for one before its 503: a burst of
# orders is checked a moment later instead of turned away for Retry-After.
ADMISSION_WAIT_SECONDS = env.float("ADMISSION_WAIT_SECONDS", default=1.0)
# GET reports/{id}/?wait=N holds the answer up to N (at most this many) seconds until the report
# is final, woken by PostgreSQL's notification (marketplace/report_waits.py) and looking at the row
# every REPORT_WAIT_POLL_SECONDS in case one was missed; at most REPORT_WAIT_SLOTS requests per web
# process wait at once (the others are answered at once). Keep the slots under the threads of a
# web process (bin/run and docker/: gunicorn gthread, 16 threads) and the wait under its timeout.
REPORT_WAIT_MAX_SECONDS = env.float("REPORT_WAIT_MAX_SECONDS", default=20.0)
REPORT_WAIT_POLL_SECONDS = env.float("REPORT_WAIT_POLL_SECONDS", default=1.0)
REPORT_WAIT_SLOTS = env.int("REPORT_WAIT_SLOTS", default=12)
# The worker touches this file every WORKER_HEARTBEAT_SECONDS; `manage.py worker_alive` checks it.
WORKER_HEARTBEAT_FILE = env("WORKER_HEARTBEAT_FILE", default=str(BASE_DIR / "var" / "worker-heartbeat"))
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=10.0)

# --- Admin and API key brute-force limits -----------------------------------------
# Admin sign-in (django-axes): after ADMIN_LOGIN_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused (429) for ADMIN_LOGIN_LOCKOUT_MINUTES, counted anew
# from each further try; a success resets the count. Attempts are kept in the database
# (Axes → Access attempts in the admin, for superusers; `manage.py axes_reset` lifts a lockout).
INSTALLED_APPS += ["axes"]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", *AUTHENTICATION_BACKENDS]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("ADMIN_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "marketplace.authentication.client_ip"
# Proxies of our own in front of the app (a load balancer: 1): the client's address is then read
# from X-Forwarded-For; 0 trusts no header and uses the connection's address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Bad API keys: an address that presents this many unknown, revoked or malformed keys within
# the window gets 429 with Retry-After until the window ends (counted in the cache; if the
# cache is down the limit is skipped, logged, and authentication goes on).
API_KEY_FAILURES_PER_IP = env.int("API_KEY_FAILURES_PER_IP", default=20)
API_KEY_FAILURE_WINDOW_SECONDS = env.int("API_KEY_FAILURE_WINDOW_SECONDS", default=600)


# --- Input bounds and response headers ---------------------------------------------
# Dates anywhere in the API (filters, order periods, key expiry, usage months) must lie in
# these years: outside them a date overflows when shifted into a time zone.
API_EARLIEST_YEAR = env.int("API_EARLIEST_YEAR", default=2000)
API_LATEST_YEAR = env.int("API_LATEST_YEAR", default=2100)
# A list's ?limit= above this is clamped to it.
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=1000)
# Bodies: at most this many bytes (413 beyond), JSON nested at most this deep (400 beyond).
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=2_621_440)  # 2.5 MiB
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES  # forms (admin, opt-out pages) too
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)
# Per geometry (an area, an order's or comparison's drawn area): checked before any database work.
GEOMETRY_MAX_VERTICES = env.int("GEOMETRY_MAX_VERTICES", default=10_000)
GEOMETRY_MAX_PARTS = env.int("GEOMETRY_MAX_PARTS", default=100)
# Measuring an area against the grid is cut off after this long (a 400 asks for a simpler shape).
AREA_MEASURE_TIMEOUT_MS = env.int("AREA_MEASURE_TIMEOUT_MS", default=5000)
SPECTACULAR_SETTINGS["DESCRIPTION"] += (
    f" Limits: dates in the years {API_EARLIEST_YEAR} to {API_LATEST_YEAR}; `limit` at most"
    f" {API_MAX_PAGE_SIZE} (more is clamped); bodies at most {MAX_REQUEST_BODY_BYTES} bytes (413 beyond),"
    f" JSON nested at most {API_MAX_JSON_DEPTH} levels; a geometry at most {GEOMETRY_MAX_VERTICES}"
    f" positions and {GEOMETRY_MAX_PARTS} polygons. Answers are `Cache-Control: no-store`."
)
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = ["marketplace.api.bounds.BoundedJSONParser"]
REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "marketplace.api.bounds.BoundedLimitOffsetPagination"
MIDDLEWARE += [
    "marketplace.middleware.RequestBodyLimitMiddleware",
    "marketplace.middleware.ApiNoStoreMiddleware",
    "csp.middleware.CSPMiddleware",
]
# The admin, the API docs and the opt-out pages load only their own scripts and styles
# (the Swagger UI comes from drf-spectacular-sidecar's static files). The docs and the opt-out
# pages add inline styles (marketplace/urls.py, pipeline/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# django-axes (the admin block above) asks to be the last middleware.
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
