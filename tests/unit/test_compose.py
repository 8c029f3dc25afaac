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
# service -> the role of `up`, or "serve" for the web app
LEDGER_SERVICES = {"processor-1": "processor", "processor-2": "processor", "relay": "relay", "notifier": "notifier",
                   "web": "serve"}
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
WRAPPER = ROOT / "docker" / "ledger-service"
GENERATE = ROOT / "secrets" / "generate.sh"
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
    for name in (*BROKERS, "postgres", *LEDGER_SERVICES):
        assert name in services, f"service {name} missing"
    assert {"kafka-1-data", "kafka-2-data", "kafka-3-data", "postgres-data"} <= set(compose.get("volumes") or {})


def _listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' as {NAME: 'host:port'}."""
    return dict(part.split("://", 1) for part in value.split(","))


def test_kafka_is_a_three_node_kraft_cluster(services: dict[str, Any]) -> None:
    assert "zookeeper" not in COMPOSE.read_text().lower()
    envs = {name: environment(services[name]) for name in BROKERS}
    ids = {env["KAFKA_NODE_ID"] for env in envs.values()}
    assert len(ids) == 3
    clusters = {env["CLUSTER_ID"] for env in envs.values()}
    assert len(clusters) == 1 and "" not in clusters, "one fixed cluster id: the ledger identifies its log by it"
    for name, env in envs.items():
        kafka = services[name]
        assert kafka["image"].startswith("apache/kafka:")
        assert {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")} == {"broker", "controller"}
        voters = dict(v.split("@", 1) for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert set(voters) == ids, "every node votes in the controller quorum"
        assert voters[env["KAFKA_NODE_ID"]] == f"{kafka['hostname']}:9093", name
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        listeners = _listeners(env["KAFKA_LISTENERS"])
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(listeners) == set(protocols), name
        assert controller in listeners
        advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert controller not in advertised
        assert all(host.startswith(f"{kafka['hostname']}:") for host in advertised.values()), name
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "the ledger creates its topics explicitly"
        assert "healthcheck" in kafka
        assert env["KAFKA_LISTENERS"].split("INTERNAL://:")[1].split(",")[0] in " ".join(kafka["healthcheck"]["test"])
        mounts = [str(v).split(":")[1] for v in kafka["volumes"]]
        assert env["KAFKA_LOG_DIRS"] in mounts, "the log directory must be on the volume"
        assert protocols["CLIENT"] == "SASL_PLAINTEXT" and env["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"
        jaas = env["KAFKA_OPTS"].split("java.security.auth.login.config=")[1].split()[0]
        assert jaas == "/run/secrets/kafka_jaas" and "kafka_jaas" in kafka["secrets"]


def test_topic_shape_fits_the_cluster(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    (tmp_path / "ledger_kafka_sasl_password").write_text("from-a-file")
    monkeypatch.setenv("LEDGER_SECRETS_DIR", str(tmp_path))
    settings = settings_from(monkeypatch, ledger_environment(services["processor-1"]))
    assert settings.topic_replication_factor == 3 <= len(BROKERS)
    assert settings.topic_min_insync_replicas == 2, "one broker may be down and writes still succeed"
    assert settings.kafka_retention_ms == -1, "input topics keep everything"


def test_postgres(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"] == "postgres:18"
    env = environment(pg)
    assert env["POSTGRES_DB"] == "benefits_ledger"
    assert env["POSTGRES_USER"] and "POSTGRES_PASSWORD" not in env, "the password comes from a secret file"
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "postgres_password" in pg["secrets"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # From 18 on the image keeps PGDATA under /var/lib/postgresql/<major>/docker.
    assert any(str(v).split(":")[1] == "/var/lib/postgresql" for v in pg["volumes"])


def test_ledger_services_wait_for_healthy_dependencies(services: dict[str, Any]) -> None:
    for name in LEDGER_SERVICES:
        svc = services[name]
        deps = svc["depends_on"]
        for dep in (*BROKERS, "postgres"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], dep


def test_ledger_services_have_a_readiness_healthcheck_on_the_metrics_port(services: dict[str, Any]) -> None:
    for name in LEDGER_SERVICES:
        svc = services[name]
        port = ledger_environment(svc)["LEDGER_METRICS_PORT"]
        probe = " ".join(svc["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe, name
        assert ledger_environment(svc)["LEDGER_METRICS_HOST"] == "0.0.0.0", "Prometheus scrapes from outside"


def test_a_deliberate_stop_is_not_restarted_but_failures_are(services: dict[str, Any]) -> None:
    """restart: on-failure plus the wrapper that turns exit 4 into 0: no crash loop on a truncated log."""
    for name in LEDGER_SERVICES:
        svc = services[name]
        assert svc["restart"] == "on-failure", name
        assert svc["entrypoint"] == ["ledger-service"], name
    final = final_stage(dockerfile_instructions())
    assert any(word == "COPY" and "docker/ledger-service /usr/local/bin/ledger-service" in rest
               for word, rest in final)


@pytest.mark.parametrize(("code", "container_exit"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 0), (130, 130)])
def test_ledger_service_wrapper_passes_exit_codes_except_a_deliberate_stop(
    code: int, container_exit: int, tmp_path: Path,
) -> None:
    import os
    import subprocess

    fake = tmp_path / "benefits-ledger"
    fake.write_text(f'#!/bin/sh\necho "args: $*"\nexit {code}\n')
    fake.chmod(0o755)
    run = subprocess.run(["sh", str(WRAPPER), "up", "--role", "processor"], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}, timeout=30)
    assert run.returncode == container_exit
    assert run.stdout.strip() == "args: up --role processor"
    assert ("stopped on purpose" in run.stderr) == (code == 4)


def test_secrets_come_from_files_and_no_password_is_written_down(
    compose: dict[str, Any], services: dict[str, Any], tmp_path: Path,
) -> None:
    import shutil
    import subprocess

    declared = compose["secrets"]
    for name, secret in declared.items():
        assert str(secret["file"]).startswith("./secrets/"), name
    known = known_env_names()
    for name in LEDGER_SERVICES:
        env = ledger_environment(services[name])
        assert "password" not in env["LEDGER_DATABASE_URL"].split("@")[0].split("//")[1].lower()
        assert ":" not in env["LEDGER_DATABASE_URL"].split("@")[0].split("//")[1], "no password in the DSN"
        for item in services[name]["secrets"]:
            assert item["source"] in declared
            # the file name is the setting's variable, lower case: pydantic-settings reads it
            assert item["target"].upper() in known, item
    text = COMPOSE.read_text()
    assert "${POSTGRES_PASSWORD" not in text and "password:" not in text.lower().replace("_password:", "")
    # generate.sh writes every declared file, and the brokers' JAAS file knows the ledger's password
    work = tmp_path / "secrets"
    work.mkdir()
    shutil.copy(GENERATE, work / "generate.sh")
    subprocess.run(["sh", str(work / "generate.sh")], check=True, capture_output=True, timeout=30)
    for secret in declared.values():
        written = work / Path(secret["file"]).name
        assert written.stat().st_size > 0, written
    password = (work / "ledger_kafka_sasl_password").read_text()
    assert len(password) >= 32 and f'user_ledger="{password}";' in (work / "kafka_jaas.conf").read_text()
    first = (work / "postgres_password").read_text()
    subprocess.run(["sh", str(work / "generate.sh")], check=True, capture_output=True, timeout=30)
    assert (work / "postgres_password").read_text() == first, "an existing secret is kept"


def test_secret_files_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ledger_database_password").write_text("s3cret-from-file\n")
    (tmp_path / "ledger_kafka_sasl_password").write_text("kafka-secret")
    monkeypatch.setenv("LEDGER_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://ledger@postgres:5432/benefits_ledger")
    settings = Settings()
    assert settings.database_password is not None
    assert settings.database_password.get_secret_value() == "s3cret-from-file"
    assert settings.kafka_sasl_password is not None
    from processor.app import configured_dsn

    dsn = configured_dsn(settings)
    assert dsn is not None and "s3cret-from-file" in dsn
    monkeypatch.setenv("LEDGER_DATABASE_PASSWORD", "from-env")
    assert Settings().database_password.get_secret_value() == "from-env", "the environment wins over files"


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
    clients = [_listeners(environment(services[b])["KAFKA_ADVERTISED_LISTENERS"])["CLIENT"] for b in BROKERS]
    pg = environment(services["postgres"])
    setup = services["setup-roles"]
    # the ledger logs in as its own unprivileged role, which setup-roles creates as the image's admin user
    dsn = f"postgresql://ledger_app@postgres:5432/{pg['POSTGRES_DB']}"
    for name in LEDGER_SERVICES:
        env = ledger_environment(services[name])
        assert env["LEDGER_KAFKA_BOOTSTRAP_SERVERS"].split(",") == clients, name
        assert env["LEDGER_DATABASE_URL"] == dsn, name
        assert env["LEDGER_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["LEDGER_KAFKA_SASL_USERNAME"] == "ledger"
        targets = {s["source"]: s["target"] for s in services[name]["secrets"]}
        assert targets["ledger_app_password"] == "ledger_database_password", "ledger_app's, set by setup-roles"
        assert services[name]["depends_on"]["setup-roles"]["condition"] == "service_completed_successfully"
    script = " ".join(setup["entrypoint"])
    assert "benefits-ledger setup-roles" in script and "--ledger-password-env APP_DB_PASSWORD" in script
    assert f"--admin-dsn postgresql://{pg['POSTGRES_USER']}@postgres:5432/{pg['POSTGRES_DB']}" in script
    assert "/run/secrets/postgres_password" in script and "/run/secrets/ledger_app_password" in script
    assert sorted(setup["secrets"]) == ["ledger_app_password", "postgres_password"]
    args = build_parser().parse_args(["setup-roles", "--admin-dsn", "postgresql://x@y/z", "--ledger-password-env",
                                      "APP_DB_PASSWORD"])
    assert args.ledger_password_env == "APP_DB_PASSWORD"


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
    name: str, services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    env = ledger_environment(services[name])
    # the secrets compose mounts (SASL needs its password to validate)
    (tmp_path / "ledger_kafka_sasl_password").write_text("from-a-file")
    monkeypatch.setenv("LEDGER_SECRETS_DIR", str(tmp_path))
    settings = settings_from(monkeypatch, env)
    assert not settings.embedded_broker and not settings.embedded_database
    assert settings.partitions == 12
    # Every value arrives as written: walk to the attribute each variable sets and compare.
    known = known_env_names()
    for key, raw in env.items():
        value: Any = settings
        for attr in known[key]:
            value = getattr(value, attr)
        if raw.startswith(("{", "[")):  # a JSON value (a mapping setting)
            assert value == json.loads(raw), f"{name}: {key}={raw!r} became {value!r}"
        else:
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
    parser = build_parser()
    if role == "serve" and "serve" not in parser._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        pytest.skip("`benefits-ledger serve` (the web app) is not on this branch yet")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on a bad command line
        pytest.fail(f"{name}: `benefits-ledger {' '.join(argv)}` does not parse ({exc.code})")
    if role == "serve":
        assert args.command == "serve"
    else:
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
