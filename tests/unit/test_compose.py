"""The deployment files: docker-compose.yml, Procfile and .env.example (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("worker", "beat", "web", "flower")
SECRET_NAME = re.compile(r"(KEY|AUTHORIZATION|PASSWORD|SECRET|TOKEN|BASIC_AUTH|REDISCLI_AUTH)$")
REQUIRED_VAR = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def command_text(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_services_present(compose: dict[str, Any]) -> None:
    """Redis, the four processes of the Procfile and the sandbox are all services."""
    assert set(compose["services"]) >= {"redis", *APP_SERVICES, "sandbox"}


def test_commands_name_the_right_modules(compose: dict[str, Any]) -> None:
    """Each process runs the module the Procfile names."""
    s = compose["services"]
    assert re.search(r"celery -A worker\.celery_app worker -P threads\b", command_text(s["worker"]))
    assert "celery -A worker.celery_app beat" in command_text(s["beat"])
    assert command_text(s["web"]) == "python -m worker.web"
    assert "celery -A worker.celery_app flower" in command_text(s["flower"])
    assert "payouts sandbox --host 0.0.0.0 --port 8099" in command_text(s["sandbox"])


def test_redis_never_evicts_and_persists(compose: dict[str, Any]) -> None:
    """Redis: noeviction, AOF on with appendfsync always by default (config/redis.conf, and the
    environment's override defaulting to always), a password from the environment."""
    redis = compose["services"]["redis"]
    cmd = command_text(redis)
    assert "--maxmemory-policy noeviction" in cmd
    assert "--appendonly yes" in cmd
    assert "redis-server /usr/local/etc/redis/redis.conf" in cmd
    assert "./config/redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    conf = (ROOT / "config" / "redis.conf").read_text()
    assert re.search(r"^appendfsync always$", conf, re.M) and re.search(r"^appendonly yes$", conf, re.M)
    assert '--appendfsync "$$REDIS_APPENDFSYNC"' in cmd
    assert redis["environment"]["REDIS_APPENDFSYNC"] == "${REDIS_APPENDFSYNC:-always}"
    assert '--requirepass "$$REDIS_PASSWORD"' in cmd
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_worker_is_scalable_and_health_checked(compose: dict[str, Any]) -> None:
    """`--scale worker=N` needs no container_name; its health check judges progress and that
    this very worker consumes (its node name, `worker@%h`, is what `--worker` names)."""
    for name, service in compose["services"].items():
        assert "container_name" not in service, name
    worker = compose["services"]["worker"]
    test = worker["healthcheck"]["test"]
    # "$$" is compose's escape of the shell's "$"
    assert test[0] == "CMD-SHELL" and 'payouts health --worker "worker@$$(hostname)"' in test[1]
    assert '--hostname "worker@%h"' in command_text(worker), "each replica needs its own Celery node name"
    assert "ports" not in worker, "a published port would stop --scale"


def test_app_services_wait_for_a_healthy_redis(compose: dict[str, Any]) -> None:
    """Every service that talks to Redis starts only once Redis is healthy.

    (The sandbox and the one-shot install never talk to Redis.)
    """
    for name in APP_SERVICES:
        deps = compose["services"][name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy", name
        assert compose["services"][name]["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")


def test_flower_requires_basic_auth(compose: dict[str, Any]) -> None:
    """Flower shows task arguments: it must ask for a login, taken from the environment."""
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_no_secret_is_hard_coded(compose: dict[str, Any]) -> None:
    """Every secret-looking variable is a required ${VAR} reference, never a literal or default."""
    seen = 0
    for name, service in compose["services"].items():
        for var, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(var):
                seen += 1
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), (name, var)
    assert seen >= 6
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text


def test_env_example_names_every_required_variable() -> None:
    """.env.example lists every variable compose requires; .env itself is git-ignored."""
    required = set(REQUIRED_VAR.findall((ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^([A-Z0-9_]+)=", example, re.M))
    assert required <= named, required - named
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_procfile_processes() -> None:
    """Procfile: worker (threads -c 64 by default), beat, web, flower with a required login,
    listening on loopback unless FLOWER_ADDRESS says otherwise (D34)."""
    lines = [
        ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    procs = dict(ln.split(":", 1) for ln in lines)
    assert set(procs) == {"worker", "beat", "web", "flower"}
    assert re.search(
        r"celery -A worker\.celery_app worker -P threads -c \"\$\{WORKER_CONCURRENCY:-64\}\"", procs["worker"]
    )
    assert "celery -A worker.celery_app beat" in procs["beat"]
    assert procs["web"].strip() == "exec python -m worker.web"
    assert "${FLOWER_BASIC_AUTH:?" in procs["flower"]
    assert "celery -A worker.celery_app flower" in procs["flower"]
    assert '--address="${FLOWER_ADDRESS:-127.0.0.1}"' in procs["flower"]


def test_durability_defaults_to_strict(compose: dict[str, Any]) -> None:
    """Strict is the default everywhere: the app services' environment and .env.example."""
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["REDIS_DURABILITY"] == "${REDIS_DURABILITY:-strict}", name
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^REDIS_DURABILITY=strict$", example, re.M)
    assert re.search(r"^REDIS_APPENDFSYNC=always$", example, re.M)


def test_monitoring_profile(compose: dict[str, Any]) -> None:
    """Prometheus and Grafana run only with the "monitoring" profile, on loopback, from the
    rules, scrape config and dashboard in config/ (each file exists)."""
    s = compose["services"]
    prom, graf = s["prometheus"], s["grafana"]
    assert prom["profiles"] == ["monitoring"] and graf["profiles"] == ["monitoring"]
    for svc in (prom, graf):
        assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"])
        for vol in svc["volumes"]:
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), src
                assert vol.endswith(":ro"), vol
    mounts = " ".join(prom["volumes"])
    assert "./config/prometheus/alerts.yml:/etc/prometheus/alerts.yml" in mounts
    scrape = yaml.safe_load((ROOT / "config/prometheus/prometheus.yml").read_text())
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    job = scrape["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["web:8001"]
    assert "./config/grafana/dashboards:/var/lib/grafana/dashboards:ro" in graf["volumes"]
    assert graf["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_the_web_admin_listener_is_private(compose: dict[str, Any]) -> None:
    """The web service publishes its public listener (callbacks) and its admin listener
    (console, /metrics) on loopback only (D50); the app is told which one is the admin one."""
    web = compose["services"]["web"]
    env = web["environment"]
    assert env["WEB_BIND"].endswith(":8000") and env["WEB_ADMIN_BIND"].endswith(":8001")
    ports = [str(p) for p in web["ports"]]
    admin = [p for p in ports if p.endswith(":8001")]
    assert admin and all(p.startswith("127.0.0.1:") for p in admin)
    assert any(p.endswith(":8000") for p in ports)


def test_install_includes_the_metrics_extra(compose: dict[str, Any]) -> None:
    """The compose virtualenv has prometheus_client, or /metrics would answer 501."""
    assert "metrics" in command_text(compose["services"]["install"])
