"""Production settings pass Django's deployment checks; the compose file runs them with every secret."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import yaml
from django.conf import settings


def test_check_deploy_is_clean_with_production_settings():
    production = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "footfall.example",
    }

    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=production,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


def production_settings(*names: str, **environment: str) -> list[str]:
    """The values of settings as a production process (DEBUG=false) sees them."""
    production = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "footfall.example",
        **environment,
    }
    printed = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            f"from django.conf import settings; print(*(getattr(settings, n) for n in {names!r}), sep='|')",
        ],
        env=production,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
    )
    assert printed.returncode == 0, printed.stderr
    return printed.stdout.strip().splitlines()[-1].split("|")


def test_production_sends_hsts_for_a_year_without_preload():
    assert production_settings("SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD") == ["31536000", "False"]


def test_hsts_preload_only_when_asked_for():
    assert production_settings("SECURE_HSTS_PRELOAD", SECURE_HSTS_PRELOAD="true") == ["True"]


# --- docker/compose.yaml -------------------------------------------------------------------------
# Docker Compose is not installed where the tests run: the file is read as YAML and its
# interpolations checked here (`docker compose -f docker/compose.yaml config` checks it fully).

COMPOSE = Path(settings.BASE_DIR) / "docker" / "compose.yaml"
SECRET_NAME = re.compile(r'env(?:\.\w+)?\("([A-Z_]*(?:SECRET|PASSWORD|TOKEN)[A-Z_]*|[A-Z_]*_KEY)"')


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_never_runs_with_debug():
    assert compose()["x-app"]["environment"]["DEBUG"] == "false"


def test_compose_passes_every_secret_the_settings_read():
    settings_source = (Path(settings.BASE_DIR) / "marketplace" / "settings.py").read_text()
    secrets_read = set(SECRET_NAME.findall(settings_source)) - {"CACHE_KEY_PREFIX"}
    environment = compose()["x-app"]["environment"]

    assert {"SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "PRIVACY_NOISE_SECRET"} <= secrets_read
    for name in secrets_read:
        assert environment.get(name, "").startswith(f"${{{name}:"), f"{name} is not passed from the environment"


def test_compose_refuses_to_start_without_the_required_secrets():
    environment = compose()["x-app"]["environment"]

    for name in ("SECRET_KEY", "PRIVACY_NOISE_SECRET", "OPTOUT_NUMBER_SECRET"):
        assert environment[name].startswith(f"${{{name}:?"), name
    assert "${DATABASE_PASSWORD:?" in environment["DATABASE_URL"]
    assert "${BROKER_PASSWORD:?" in environment["CELERY_BROKER_URL"]


def test_every_long_running_compose_service_has_a_health_check():
    services = compose()["services"]

    for name, service in services.items():
        if name == "migrate":  # a one-off the others wait to complete
            assert service["healthcheck"] == {"disable": True}
            continue
        assert service["healthcheck"]["test"], name


def test_the_example_env_file_names_every_required_variable():
    example = (Path(settings.BASE_DIR) / "docker" / ".env.example").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))

    assert required == {
        "SECRET_KEY",
        "PRIVACY_NOISE_SECRET",
        "OPTOUT_NUMBER_SECRET",
        "DATABASE_PASSWORD",
        "BROKER_PASSWORD",
    }
    assert all(re.search(rf"^{name}=", example, re.MULTILINE) for name in required)
