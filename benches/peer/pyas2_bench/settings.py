"""Minimal Django project serving django-pyas2's AS2 receive view, for
benches/side-by-side.sh. Everything the server writes (SQLite database,
received payloads, MDN store) goes under $PYAS2_BENCH_DIR, a temporary
directory made by the script."""
import os

BASE = os.environ["PYAS2_BENCH_DIR"]

SECRET_KEY = "side-by-side-benchmark-only"  # loopback benchmark, no sessions used
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "pyas2",
]
MIDDLEWARE = []  # the receive view needs none (it is csrf_exempt)
ROOT_URLCONF = "pyas2_bench.urls"
WSGI_APPLICATION = "pyas2_bench.wsgi.application"
TEMPLATES = []
USE_TZ = True

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(BASE, "pyas2.sqlite3"),
        "OPTIONS": {
            # Several gunicorn workers write at once: wait for the lock
            # (Django's default is 5 s) and take it when the transaction
            # starts, so that a read-then-write transaction cannot fail with
            # "database is locked" (the setting Django's docs recommend for
            # concurrent SQLite writers).
            "timeout": 60,
            "transaction_mode": "IMMEDIATE",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Received payloads, headers and MDNs are stored through default_storage,
# under MEDIA_ROOT. PYAS2["DATA_DIR"] is left unset: it is an absolute path,
# which Django 4.2.x and later refuse in storage.save (SuspiciousFileOperation,
# "Detected path traversal attempt", a 400 for every message); unset, the
# inbox is MEDIA_ROOT/messages/.
MEDIA_ROOT = os.path.join(BASE, "media")

# Django refuses request bodies over 2.5 MiB by default (RequestDataTooBig),
# which would reject the 100 MiB load. Atom's default limit is 1 GiB; use
# the same here.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1 << 30

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "pyas2": {"handlers": ["stderr"], "level": "WARNING"},
        "django": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
