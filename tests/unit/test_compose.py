"""docker-compose.yml, Dockerfile and .dockerignore, checked by structure (no Docker engine runs here).

The compose file is the production shape (Kafka in KRaft mode, PostgreSQL, processors in one consumer
group, the outbox relay). What can drift silently is checked against the code: every LEDGER_* variable
must be a setting ``processor.settings.Settings`` knows and its value must validate, each command must
parse with the CLI's own parser, and the image's entrypoint must be the console script of pyproject.toml.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from processor.cli import build_parser
from processor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

PROCESSORS = ("processor-1", "processor-2")
LEDGER_SERVICES = {"processor-1": "processor", "processor-2": "processor", "relay": "relay"}
PREFIX = "LEDGER_"
DELIMITER = "__"

# Compose interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}; "$$" is a literal "$".
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


# -- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def interpolate(value: str) -> str:
    """The value compose uses when none of the referenced variables is set (their defaults)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("op") is None:
            raise AssertionError(f"${{{m.group('name')}}} has no default: the file must work with no .env")
        return m.group("default")

    return _INTERPOLATION.sub(one, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict of strings (compose accepts a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        env = {k: (v[0] if v else "") for k, *v in pairs}
    out: dict[str, str] = {}
    for key, value in env.items():
        assert value is None or isinstance(value, str | int | float), f"{key}: scalar expected"
        assert not isinstance(value, bool), f"{key}: quote booleans, compose would pass True/False"
        out[str(key)] = interpolate("" if value is None else str(value))
    return out


def ledger_environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in environment(service).items() if k.startswith(PREFIX)}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    assert isinstance(cmd, list), "command in exec form (a list), as the entrypoint is exec form too"
    return [str(part) for part in cmd]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class a field holds (also through ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def known_env_names(model: type[BaseModel] = Settings, prefix: str = PREFIX) -> dict[str, tuple[str, ...]]:
    """Every environment variable Settings reads, mapped to the attribute path it sets.

    A nested model is read both whole (LEDGER_PLAN as JSON) and field by field (LEDGER_PLAN__GRACE_DAYS).
    """
    names: dict[str, tuple[str, ...]] = {}

    def walk(cls: type[BaseModel], env_prefix: str, path: tuple[str, ...]) -> None:
        for name, field in cls.model_fields.items():
            env = f"{env_prefix}{name}".upper()
            names[env] = (*path, name)
            sub = _nested_model(field.annotation)
            if sub is not None:
                walk(sub, env + DELIMITER, (*path, name))

    walk(model, prefix, ())
    return names


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    # conftest's autouse fixture has already removed the developer's LEDGER_* variables.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1]:]


# -- services ---------------------------------------------------------------------------------------


def test_compose_spec_shape(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose spec has no version key"
    for name in ("kafka", "postgres", *PROCESSORS, "relay"):
        assert name in services, f"service {name} missing"
    assert {"kafka-data", "postgres-data"} <= set(compose.get("volumes") or {})


def test_kafka_is_single_node_kraft(services: dict[str, Any]) -> None:
    assert "zookeeper" not in COMPOSE.read_text().lower()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@")
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert controller in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "the ledger creates its topics explicitly"
    assert env.get("CLUSTER_ID"), "a fixed cluster id: the ledger identifies its log by it"
    assert "healthcheck" in kafka
    mounts = [str(v).split(":")[1] for v in kafka["volumes"]]
    assert env["KAFKA_LOG_DIRS"] in mounts, "the log directory must be on the volume"


def test_postgres(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"] == "postgres:18"
    env = environment(pg)
    assert env["POSTGRES_DB"] == "benefits_ledger"
    assert env["POSTGRES_USER"] and env["POSTGRES_PASSWORD"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # From 18 on the image keeps PGDATA under /var/lib/postgresql/<major>/docker.
    assert any(str(v).split(":")[1] == "/var/lib/postgresql" for v in pg["volumes"])


def test_ledger_services_wait_for_healthy_dependencies(services: dict[str, Any]) -> None:
    for name in LEDGER_SERVICES:
        svc = services[name]
        assert svc.get("restart") == "unless-stopped", name
        deps = svc["depends_on"]
        for dep in ("kafka", "postgres"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], dep


def test_ledger_services_share_one_image(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in LEDGER_SERVICES}
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in LEDGER_SERVICES}
    assert len(images) == 1 and len(builds) == 1


def test_processors_share_one_consumer_group(services: dict[str, Any]) -> None:
    groups = {ledger_environment(services[name]).get("LEDGER_CONSUMER_GROUP") for name in PROCESSORS}
    assert len(groups) == 1 and None not in groups, groups
    for name in PROCESSORS:
        assert command(services[name])[:3] == ["up", "--role", "processor"]


def test_ledger_points_at_the_compose_kafka_and_postgres(services: dict[str, Any]) -> None:
    kafka = environment(services["kafka"])
    pg = environment(services["postgres"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    dsn = f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    for name in LEDGER_SERVICES:
        env = ledger_environment(services[name])
        assert env["LEDGER_KAFKA_BOOTSTRAP_SERVERS"] == advertised, name
        assert env["LEDGER_DATABASE_URL"] == dsn, name


# -- settings ---------------------------------------------------------------------------------------


def test_known_env_names_cover_nested_settings() -> None:
    names = known_env_names()
    assert names["LEDGER_PARTITIONS"] == ("partitions",)
    assert names["LEDGER_PLAN__GRACE_DAYS"] == ("plan", "grace_days")
    assert names["LEDGER_TOPICS__ENROLLMENT"] == ("topics", "enrollment")


def test_every_ledger_variable_is_a_known_setting(services: dict[str, Any]) -> None:
    known = known_env_names()
    unknown = {
        (name, key)
        for name, svc in services.items()
        for key in environment(svc)
        if key.startswith(PREFIX) and key not in known
    }
    assert not unknown, f"LEDGER_* variables that no setting reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(LEDGER_SERVICES))
def test_ledger_environment_validates(
    name: str, services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = ledger_environment(services[name])
    settings = settings_from(monkeypatch, env)
    assert not settings.embedded_broker and not settings.embedded_database
    assert settings.partitions == 12
    # Every value arrives as written: walk to the attribute each variable sets and compare.
    known = known_env_names()
    for key, raw in env.items():
        value: Any = settings
        for attr in known[key]:
            value = getattr(value, attr)
        assert str(value) == raw, f"{name}: {key}={raw!r} became {value!r}"


def test_shared_environment_is_one_anchor(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert "x-ledger-env" in compose
    envs = [ledger_environment(services[name]) for name in LEDGER_SERVICES]
    assert all(env == envs[0] for env in envs), "the ledger services should read the same settings"
    shared = {"LEDGER_BATCH_EVENTS_MAX", "LEDGER_PLAN__TOLERANCE_CENTS", "LEDGER_PLAN__GRACE_DAYS"}
    assert shared <= set(envs[0])


# -- commands and image -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "role"), sorted(LEDGER_SERVICES.items()))
def test_command_parses_with_the_cli(name: str, role: str, services: dict[str, Any]) -> None:
    argv = command(services[name])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on a bad command line
        pytest.fail(f"{name}: `benefits-ledger {' '.join(argv)}` does not parse ({exc.code})")
    assert args.command == "up"
    assert args.role == role


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert "benefits-ledger" in scripts
    module, _, func = scripts["benefits-ledger"].partition(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))

    final = final_stage(dockerfile_instructions())
    entrypoints = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoints == [["benefits-ledger"]], "exec-form ENTRYPOINT of the console script"
    cmds = [json.loads(rest) for word, rest in final if word == "CMD"]
    for cmd in cmds:
        build_parser().parse_args(cmd)


def test_dockerfile_installs_the_project_as_non_root() -> None:
    instructions = dockerfile_instructions()
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert froms and all(image == "python:3.12-slim" for image in froms)
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "pip" in runs
    assert not re.search(r"pip install[^&;]*\s(-e|--editable)\s", runs), "no editable install"
    users = [rest for word, rest in final_stage(instructions) if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime image must not run as root"


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git", "tests"} <= patterns
    assert "pyproject.toml" not in patterns and "processor" not in patterns


def test_the_workbench_service_runs_serve_on_all_interfaces_of_its_container(services: dict[str, Any]) -> None:
    web = services["web"]
    args = build_parser().parse_args(command(web))
    assert (args.command, args.host) == ("serve", "0.0.0.0")
    assert web["ports"] == ["127.0.0.1:8000:8000"]  # published on the host's loopback only
    assert ledger_environment(web) == ledger_environment(services["relay"])
