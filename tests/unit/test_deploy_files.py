"""The deployment files (docker-compose.yml, Dockerfile, .dockerignore, the Helm chart) agree with the code they run.

The settings' names come from the source of infra/config.py, the commands are parsed by the real `bookmarket`
argument parser, and the chart is rendered and linted by Helm's own library (helm-python-sdk) and every manifest
is validated offline against the Kubernetes schemas (kubernetes-validate) of the oldest and the newest version the
chart supports; KEDA's ScaledObject, which kubernetes-validate does not know, against the JSON schema converted from
KEDA's CRD (tests/unit/schemas/).
"""
from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from cli.main import WORKER_THREADS, parser
from infra.config import Settings

pytestmark = pytest.mark.no_cover  # reads deployment files, runs nothing of services/: spared coverage's tracing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "bookmarket"
KUBE_VERSION = "1.30.0"
# The Kubernetes versions the chart supports: from its kubeVersion (>=1.25) to the newest kubernetes-validate knows.
OLDEST_KUBE, NEWEST_KUBE = "1.25.0", "1.37.0"
KEDA_SCHEMA = ROOT / "tests" / "unit" / "schemas" / "keda-scaledobject-v1alpha1.json"
README = ROOT / "README.md"
RELEASE, NAMESPACE = "demo", "shop"

SECRET_NAMES = {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "BOOKMARKET_TOKENS", "FLOWER_BASIC_AUTH"}
# The API tokens the tests give compose (from the shell, as compose interpolates them) and the chart (a value).
SHELL_ENV = {"BOOKMARKET_TOKENS": "storefront=compose-storefront-token,support=compose-support-token"}
CHART_TOKENS = f"storefront=chart-storefront-token,support:ops=sha256:{'ab' * 32}"
BOOKMARKET_SERVICES = {"migrate", "api", "worker", "beat", "flower", "sandbox"}
BEAT_ON = {"beat": {"enabled": True}}
NO_AUTOSCALING = {"api": {"autoscaling": {"enabled": False}}, "worker": {"autoscaling": {"enabled": False}}}
EXTERNAL_PROVIDERS = {
    "sandbox": {"enabled": False},
    "config": {
        "paymentUrl": "https://payments.example.com/v1",
        "deliveryUrl": "https://delivery.example.com",
        "messagingUrl": "https://messaging.example.com",
    },
}


# ---------------------------------------------------------------- helpers


def config_env_names() -> set[str]:
    """Every environment name infra/config.py reads: the quoted all-capitals names in its source text."""
    text = (ROOT / "infra" / "config.py").read_text()
    return set(re.findall(r"""["']([A-Z][A-Z0-9_]{2,})["']""", text))


class RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def compose(shell: Mapping[str, str] = SHELL_ENV) -> dict[str, Any]:
    """docker-compose.yml as compose reads it when `shell` is its environment."""
    data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), shell))
    return data


def interpolate(text: str, shell: Mapping[str, str]) -> str:
    """Compose's variable substitution: ${NAME}, ${NAME:-default}, ${NAME:?error} (ValueError), $$ for a dollar."""
    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        value = shell.get(name, "")
        if not value and operator == ":?":
            raise ValueError(f"required variable {name} is missing a value: {argument}")
        return value or (argument if operator == ":-" else "")

    pattern = r"\$\{(\w+)(?:(:[-?])([^}]*))?\}"
    return "$".join(re.sub(pattern, substitute, part) for part in text.split("$$"))


def shared_env() -> dict[str, str]:
    env: dict[str, str] = compose()["x-bookmarket-env"]
    return env


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def bookmarket_args(argv: list[str]) -> Any:
    """Parse a `bookmarket ...` command line with the real CLI parser (SystemExit on anything it rejects)."""
    assert argv[0] == "bookmarket", argv
    return parser().parse_args(argv[1:])


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuation lines joined), grouped by stage."""
    stages: list[list[tuple[str, str]]] = []
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


# ---------------------------------------------------------------- infra/config.py itself


def test_the_names_grepped_from_infra_config_include_every_name_settings_actually_reads() -> None:
    env = RecordingEnv()
    Settings.from_env(env)
    grepped = config_env_names()
    assert {"DATABASE_URL", "REDIS_URL", "SANDBOX_URL", "SAGA_QUEUE"} <= grepped
    assert env.asked <= grepped, f"read but not found by the grep: {env.asked - grepped}"


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_refuses_to_start_without_api_tokens_and_says_which_variable_to_set() -> None:
    with pytest.raises(ValueError, match="BOOKMARKET_TOKENS.*storefront=<token>"):
        compose(shell={})


def test_compose_defines_every_service_of_the_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "rabbitmq", *BOOKMARKET_SERVICES}
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]  # optional: BROKER_URL empty uses Redis


def test_every_name_in_the_shared_compose_env_is_one_infra_config_reads() -> None:
    unknown = set(shared_env()) - config_env_names()
    assert not unknown, f"x-bookmarket-env sets names infra/config.py never reads: {sorted(unknown)}"


def test_the_shared_compose_env_sets_every_name_infra_config_reads() -> None:
    missing = config_env_names() - set(shared_env())
    assert not missing, f"x-bookmarket-env lacks: {sorted(missing)}"


def test_the_shared_compose_env_values_are_valid_settings() -> None:
    env = shared_env()
    assert all(isinstance(v, str) for v in env.values()), "quote every value: compose wants strings"
    settings = Settings.from_env(env)
    assert (settings.database_url, settings.redis_url) == (env["DATABASE_URL"], env["REDIS_URL"])
    assert settings.api_tokens.describe() == ["storefront:storefront", "support:support"]
    for name, value in env.items():
        if value.startswith("{"):
            assert isinstance(json.loads(value), dict), name


def test_every_bookmarket_service_gets_the_whole_shared_env() -> None:
    shared = shared_env()
    services = compose()["services"]
    for name in BOOKMARKET_SERVICES:
        env = services[name]["environment"]
        assert {k: env.get(k) for k in shared} == shared, name


def test_the_shared_compose_env_points_at_the_compose_services() -> None:
    env = shared_env()
    services = compose()["services"]
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"
    sandbox = urlsplit(env["SANDBOX_URL"])
    sandbox_args = bookmarket_args(as_argv(services["sandbox"]["command"]))
    assert (sandbox.hostname, sandbox.port) == ("sandbox", sandbox_args.port)
    for name, path in (("PAYMENT_URL", "payment"), ("DELIVERY_URL", "delivery"), ("MESSAGING_URL", "messaging")):
        assert env[name] == f"{env['SANDBOX_URL']}/{path}"


def test_compose_runs_the_documented_bookmarket_commands() -> None:
    services = compose()["services"]
    parsed = {name: bookmarket_args(as_argv(services[name]["command"])) for name in BOOKMARKET_SERVICES}
    assert parsed["migrate"].command == "migrate"
    assert (parsed["api"].command, parsed["api"].bind, parsed["api"].port) == ("api", "0.0.0.0", 8080)
    assert (parsed["worker"].command, parsed["worker"].threads, parsed["worker"].beat) == ("worker", WORKER_THREADS,
                                                                                            False)
    assert parsed["beat"].command == "beat"
    assert (parsed["sandbox"].command, parsed["sandbox"].bind, parsed["sandbox"].port) == ("sandbox", "0.0.0.0", 8090)


def test_compose_runs_one_worker_container_per_core_of_the_reference_machine() -> None:
    assert compose()["services"]["worker"]["deploy"]["replicas"] == 2


def test_compose_and_the_chart_use_the_product_defaults_for_concurrency_pools_and_bulkheads(
    chart: helm_python.Chart,
) -> None:
    defaults = Settings.from_env({})
    for env in (shared_env(), settings_env(render(chart))):
        settings = Settings.from_env(env)
        assert settings.bulkhead_max_calls == defaults.bulkhead_max_calls
        for name in ("bulkhead_wait_s", "db_pool_size", "shutdown_grace_s", "admission_max_wait_s",
                     "admission_target_ms", "worker_nice"):
            assert getattr(settings, name) == getattr(defaults, name), name


def test_the_default_bulkheads_leave_payments_threads_when_the_other_providers_hang() -> None:
    caps = Settings.from_env({}).bulkhead_max_calls
    assert caps["delivery"] + caps["messaging"] <= WORKER_THREADS - 64
    assert caps["payment"] < WORKER_THREADS


def test_compose_keeps_the_sandbox_ledgers_in_a_volume() -> None:
    data = compose()
    sandbox = data["services"]["sandbox"]
    folder = sandbox["environment"]["SANDBOX_DATA_DIR"]
    volume, _, mounted_at = next(v for v in sandbox["volumes"] if v.endswith(f":{folder}")).partition(":")
    assert mounted_at == folder and volume in data["volumes"]


def test_compose_runs_flower_as_bookmarket_flower_with_its_api_open_on_5555() -> None:
    flower = compose()["services"]["flower"]
    args = bookmarket_args(as_argv(flower["command"]))
    assert (args.command, args.bind, args.port) == ("flower", "0.0.0.0", 5555)
    assert flower["environment"]["FLOWER_UNAUTHENTICATED_API"] == "true"
    assert "5555:5555" in flower["ports"]


def test_compose_publishes_the_api_on_8080_only_after_the_migration_completed() -> None:
    api = compose()["services"]["api"]
    assert "8080:8080" in api["ports"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_migrates_once_after_postgres_is_healthy() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]


def test_compose_uses_postgres_16_and_redis_7() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == urlsplit(shared_env()["DATABASE_URL"]).path[1:]


def test_every_compose_dependency_names_a_service_and_waits_on_a_healthcheck_it_has() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, it has no healthcheck"


def test_compose_builds_every_bookmarket_service_from_the_dockerfile() -> None:
    services = compose()["services"]
    images = {services[name]["image"] for name in BOOKMARKET_SERVICES}
    assert len(images) == 1
    assert all(services[name]["build"] == "." for name in BOOKMARKET_SERVICES)


# ---------------------------------------------------------------- Dockerfile and .dockerignore


def test_the_dockerfile_runs_as_a_non_root_user_on_python_311_slim() -> None:
    final = dockerfile_stages()[-1]
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [rest for instruction, rest in final if instruction == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_dockerfile_installs_the_package_itself_not_an_editable_checkout() -> None:
    runs = " ".join(rest for stage in dockerfile_stages() for instruction, rest in stage if instruction == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", runs)
    assert "-e ." not in runs
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "flower" in cfg["options"]["install_requires"], "the image also serves the flower service"
    assert all(stage[0][1].startswith("python:3.11-slim") for stage in dockerfile_stages())


def test_the_dockerfile_default_command_serves_the_api_on_every_interface() -> None:
    cmds = [rest for instruction, rest in dockerfile_stages()[-1] if instruction == "CMD"]
    argv = json.loads(cmds[-1])
    assert argv == ["bookmarket", "api", "--bind", "0.0.0.0"]
    assert bookmarket_args(argv).port == 8080


def test_the_dockerignore_keeps_the_venv_and_git_out_and_the_install_inputs_in() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)

    assert ignored(".venv") and ignored(".git") and ignored("api/__pycache__")
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = cfg["options.packages.find"]["include"].split()
    needed = ["setup.cfg", "pyproject.toml", "README.md"] + [p.rstrip("*") + "/__init__.py" for p in packages]
    assert not [path for path in needed if ignored(path)]


def test_pip_install_dot_ships_every_migration_revision_the_image_needs_to_migrate() -> None:
    """A non-editable install (the image's) carries only packages and package_data: the revisions must be one."""
    revisions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py") if p.name != "__init__.py")
    assert revisions
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    is_package = (ROOT / "migrations" / "versions" / "__init__.py").exists()
    data = cfg["options.package_data"].get("migrations", "") if cfg.has_section("options.package_data") else ""
    patterns = [p.strip() for p in data.replace(",", " ").split()]
    shipped = [r for r in revisions if is_package or any(fnmatch.fnmatch(f"versions/{r}", p) for p in patterns)]
    assert shipped == revisions, (
        "`pip install .` leaves out migrations/versions/*.py, so `bookmarket migrate` in the image finds no "
        "revision: add migrations/versions/__init__.py, or `versions/*.py` to [options.package_data] migrations"
    )


# ---------------------------------------------------------------- the Helm chart


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every manifest an install with these values creates (hooks included), NOTES.txt left out."""
    rendered = chart.render(with_tokens(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def with_tokens(values: dict[str, Any]) -> dict[str, Any]:
    """The values with secrets.apiTokens (required) set to the tests' tokens unless they set it."""
    return {**values, "secrets": {"apiTokens": CHART_TOKENS, **values.get("secrets", {})}}


def one(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and component_of(d) == component]
    assert len(found) == 1, f"{len(found)} {kind} for {component}"
    return found[0]


def component_of(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def settings_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """What a pod's envFrom gives it: the ConfigMap's data and the Secret's stringData."""
    config = [d for d in docs if d["kind"] == "ConfigMap"]
    secrets = [d for d in docs if d["kind"] == "Secret" and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
    assert len(config) == 1 and len(secrets) == 1
    return {**config[0]["data"], **secrets[0]["stringData"]}


def test_the_chart_lints_without_warnings_in_strict_mode() -> None:
    for values in ({}, EXTERNAL_PROVIDERS):
        report = helm_python.lint(CHART, with_tokens(values), strict=True, kube_version=f"v{KUBE_VERSION}")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{}, EXTERNAL_PROVIDERS], ids=["defaults", "sandbox-disabled"])
def test_every_rendered_manifest_is_valid_for_kubernetes_1_30(chart: helm_python.Chart, values: dict) -> None:
    docs = render(chart, values)
    assert len(docs) >= 8
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", [{}, EXTERNAL_PROVIDERS], ids=["defaults", "sandbox-disabled"])
def test_the_configmap_and_secret_set_exactly_the_names_infra_config_reads(
    chart: helm_python.Chart, values: dict
) -> None:
    env = settings_env(render(chart, values))
    assert set(env) == config_env_names()


def test_the_secret_holds_the_urls_with_credentials_and_the_configmap_none_of_them(chart: helm_python.Chart) -> None:
    docs = render(chart)
    secret = next(d for d in docs if d["kind"] == "Secret" and "annotations" not in d["metadata"])
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(secret["stringData"]) == SECRET_NAMES
    assert not SECRET_NAMES & set(config["data"])


def test_the_chart_default_settings_are_valid_settings(chart: helm_python.Chart) -> None:
    env = settings_env(render(chart))
    settings = Settings.from_env(env)
    assert (settings.database_url, settings.redis_url) == (env["DATABASE_URL"], env["REDIS_URL"])


def test_the_chart_passes_values_through_as_strings_python_parses(chart: helm_python.Chart) -> None:
    """Helm holds numbers as floats: integers must not come out as 1e+06, objects come out as JSON."""
    steps = {"*": {"max_attempts": 4, "base_s": 0.5, "cap_s": 10}}
    breakers = {"payment": {"fail_max": 3, "reset_s": 30}}
    values = {
        "config": {
            "stepPolicies": steps, "breakerPolicies": breakers, "providerTimeoutS": 2.5, "maxRecoveries": 7,
            "admissionMaxWaitingPayments": 1000000, "sagaQueue": "orders",
        },
        "secrets": {"databaseUrl": "postgresql://u:p@db.internal:5432/shop", "redisUrl": "redis://cache:6379/1"},
    }
    env = settings_env(render(chart, values))
    assert json.loads(env["STEP_POLICIES"]) == steps
    assert json.loads(env["BREAKER_POLICIES"]) == breakers
    assert (env["PROVIDER_TIMEOUT_S"], env["MAX_RECOVERIES"], env["SAGA_QUEUE"]) == ("2.5", "7", "orders")
    assert env["ADMISSION_MAX_WAITING_PAYMENTS"] == "1000000"
    described = Settings.from_env(env).describe().values()
    assert steps in described and breakers in described and 1000000 in described
    assert "postgresql://u:p@db.internal:5432/shop" in described and "redis://cache:6379/1" in described


def test_the_default_providers_are_the_chart_sandbox_service(chart: helm_python.Chart) -> None:
    docs = render(chart)
    service = one(docs, "Service", "sandbox")
    env = settings_env(docs)
    url = urlsplit(env["SANDBOX_URL"])
    assert (url.hostname, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert env["PAYMENT_URL"] == env["SANDBOX_URL"] + "/payment"
    assert env["MESSAGING_URL"] == env["SANDBOX_URL"] + "/messaging"


def test_disabling_the_sandbox_removes_it_and_uses_the_given_provider_urls(chart: helm_python.Chart) -> None:
    docs = render(chart, EXTERNAL_PROVIDERS)
    assert not [d for d in docs if component_of(d) == "sandbox"]
    env = settings_env(docs)
    assert env["PAYMENT_URL"] == "https://payments.example.com/v1"
    assert env["DELIVERY_URL"] == "https://delivery.example.com"
    assert env["MESSAGING_URL"] == "https://messaging.example.com"


def test_disabling_the_sandbox_without_provider_urls_fails_with_a_message_naming_the_value(
    chart: helm_python.Chart,
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"config\.paymentUrl is required"):
        render(chart, {"sandbox": {"enabled": False}})


def test_the_api_deployment_probes_readiness_on_readyz_and_liveness_on_healthz(
    chart: helm_python.Chart,
) -> None:
    docs = render(chart)
    container = pod_spec(one(docs, "Deployment", "api"))["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == bookmarket_args(container["command"]).port
    assert container["readinessProbe"]["timeoutSeconds"] > float(settings_env(docs)["READINESS_TIMEOUT_S"]) * 2


def test_the_worker_deployment_probes_liveness_with_worker_alive_on_its_heartbeat_file(
    chart: helm_python.Chart,
) -> None:
    docs = render(chart, {"worker": {"livenessMaxAgeS": 45}})
    spec = pod_spec(one(docs, "Deployment", "worker"))
    container = spec["containers"][0]
    argv = container["livenessProbe"]["exec"]["command"]
    args = bookmarket_args(argv)
    assert (args.command, args.max_age) == ("worker-alive", 45)
    env = settings_env(docs)
    assert args.max_age > 2 * float(env["WORKER_HEARTBEAT_S"])
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(env["WORKER_HEARTBEAT_FILE"].startswith(m.rstrip("/") + "/") for m in mounts), "on a writable volume"


def test_compose_checks_the_api_on_readyz_and_the_worker_with_worker_alive() -> None:
    services = compose()["services"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    test = services["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    args = bookmarket_args(test[1:])
    assert args.command == "worker-alive"
    assert args.max_age > 2 * float(shared_env()["WORKER_HEARTBEAT_S"])


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ("api", ["bookmarket", "api", "--bind", "0.0.0.0", "--port", "8080"]),
        ("worker", ["bookmarket", "worker", "--threads", str(WORKER_THREADS)]),
        ("beat", ["bookmarket", "beat"]),
        ("sandbox", ["bookmarket", "sandbox", "--bind", "0.0.0.0", "--port", "8090"]),
    ],
)
def test_each_deployment_runs_its_bookmarket_command(chart: helm_python.Chart, component: str, expected: list) -> None:
    command = pod_spec(one(render(chart, BEAT_ON), "Deployment", component))["containers"][0]["command"]
    assert command == expected
    assert bookmarket_args(command).command == component


def test_the_flower_deployment_runs_bookmarket_flower_with_its_api_open(chart: helm_python.Chart) -> None:
    container = pod_spec(one(render(chart), "Deployment", "flower"))["containers"][0]
    assert container["command"] == ["bookmarket", "flower", "--bind", "0.0.0.0", "--port", "5555"]
    assert {"name": "FLOWER_UNAUTHENTICATED_API", "value": "true"} in container["env"]
    assert container["ports"][0]["containerPort"] == 5555


def test_beat_runs_exactly_one_replica_whatever_the_other_replica_counts(chart: helm_python.Chart) -> None:
    beat = one(render(chart, {**NO_AUTOSCALING, **BEAT_ON, "api": {"replicas": 5, "autoscaling": {"enabled": False}}}),
               "Deployment", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_asking_for_more_beat_replicas_is_rejected_by_the_values_schema(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="replicas"):
        render(chart, {"beat": {"replicas": 2}})


def test_replica_counts_come_from_the_values_when_autoscaling_is_off(chart: helm_python.Chart) -> None:
    docs = render(chart, {"api": {"replicas": 3, "autoscaling": {"enabled": False}},
                          "worker": {"replicas": 4, "autoscaling": {"enabled": False}}, "flower": {"replicas": 2}})
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    replicas = {c: one(docs, "Deployment", c)["spec"]["replicas"] for c in ("api", "worker", "flower", "sandbox")}
    assert replicas == {"api": 3, "worker": 4, "flower": 2, "sandbox": 1}


def test_worker_pods_get_longer_than_the_worker_shutdown_grace_and_a_provider_call_before_sigkill(
    chart: helm_python.Chart,
) -> None:
    docs = render(chart)
    grace = pod_spec(one(docs, "Deployment", "worker"))["terminationGracePeriodSeconds"]
    env = settings_env(docs)
    assert grace == 30
    assert grace > float(env["WORKER_SHUTDOWN_GRACE_S"]) >= float(env["PROVIDER_TIMEOUT_S"])
    changed = render(chart, {"config": {"workerShutdownGraceS": 45.5}, "worker": {"terminationGraceMarginS": 15}})
    assert pod_spec(one(changed, "Deployment", "worker"))["terminationGracePeriodSeconds"] == 46 + 15
    assert settings_env(changed)["WORKER_SHUTDOWN_GRACE_S"] == "45.5"


def test_the_migration_job_is_a_pre_install_and_pre_upgrade_hook_running_migrate(chart: helm_python.Chart) -> None:
    docs = render(chart)
    job = one(docs, "Job", "migrate")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["bookmarket", "migrate"]
    assert bookmarket_args(container["command"]).command == "migrate"
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_the_migration_job_reads_the_database_url_from_a_secret_that_exists_before_it(
    chart: helm_python.Chart,
) -> None:
    """Pre-install hooks run before the release's own Secret exists: the Job's must be an earlier hook."""
    docs = render(chart)
    job = one(docs, "Job", "migrate")
    ref = pod_spec(job)["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"])
    annotations = secret["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) >= {"pre-install", "pre-upgrade"}
    assert int(annotations["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert secret["stringData"][ref["key"]] == settings_env(docs)["DATABASE_URL"]


def test_an_existing_secret_replaces_the_chart_secrets_everywhere(chart: helm_python.Chart) -> None:
    docs = render(chart, {"secrets": {"existingSecret": "shop-db"}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    for doc in docs:
        if doc["kind"] == "Deployment":
            refs = [e["secretRef"]["name"] for e in pod_spec(doc)["containers"][0]["envFrom"] if "secretRef" in e]
            assert refs == ["shop-db"]
    job = one(docs, "Job", "migrate")
    assert pod_spec(job)["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "shop-db"


def test_every_deployment_reads_the_configmap_and_the_secret(chart: helm_python.Chart) -> None:
    docs = render(chart, BEAT_ON)
    config = next(d for d in docs if d["kind"] == "ConfigMap")["metadata"]["name"]
    secret = next(d for d in docs if d["kind"] == "Secret" and "annotations" not in d["metadata"])["metadata"]["name"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {component_of(d) for d in deployments} == {
        "api", "worker", "beat", "flower", "sandbox"
    }
    for doc in deployments:
        env_from = pod_spec(doc)["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": config}} in env_from
        assert {"secretRef": {"name": secret}} in env_from


def test_each_service_selects_the_pods_of_exactly_one_deployment_on_a_named_port(chart: helm_python.Chart) -> None:
    docs = render(chart)
    services = [d for d in docs if d["kind"] == "Service"]
    assert {component_of(s) for s in services} == {"api", "flower", "sandbox"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for service in services:
        selector = service["spec"]["selector"].items()
        chosen = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(chosen) == 1, service["metadata"]["name"]
        port_names = {p["name"] for p in pod_spec(chosen[0])["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_every_pod_runs_as_a_non_root_user(chart: helm_python.Chart) -> None:
    for doc in render(chart):
        if doc["kind"] in {"Deployment", "Job"}:
            spec = pod_spec(doc)
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] != 0
            assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_turning_flower_off_removes_its_deployment_and_service(chart: helm_python.Chart) -> None:
    docs = render(chart, {"flower": {"enabled": False}})
    assert not [d for d in docs if component_of(d) == "flower"]


def test_fault_injection_is_off_in_compose_and_in_the_chart_by_default(chart: helm_python.Chart) -> None:
    for env in (shared_env(), settings_env(render(chart))):
        assert (env["CHAOS_DUPLICATE_DISPATCH"], env["CHAOS_POISON_STEPS"]) == ("0", "")


def test_the_chart_passes_fault_injection_through_and_rejects_a_malformed_poison_list(
    chart: helm_python.Chart,
) -> None:
    env = settings_env(render(chart, {"config": {"chaosDuplicateDispatch": True, "chaosPoisonSteps": "ship:raise"}}))
    assert (env["CHAOS_DUPLICATE_DISPATCH"], env["CHAOS_POISON_STEPS"]) == ("1", "ship:raise")
    Settings.from_env(env)
    with pytest.raises(helm_python.HelmValuesError, match="chaosPoisonSteps"):
        render(chart, {"config": {"chaosPoisonSteps": "ship:explode"}})


def test_the_chart_passes_the_api_tokens_to_the_secret_and_they_parse(chart: helm_python.Chart) -> None:
    docs = render(chart)
    secret = next(d for d in docs if d["kind"] == "Secret" and "annotations" not in d["metadata"])
    assert secret["stringData"]["BOOKMARKET_TOKENS"] == CHART_TOKENS
    tokens = Settings.from_env(settings_env(docs)).api_tokens
    assert tokens.describe() == ["storefront:storefront", "support:ops"]
    assert tokens.find("chart-storefront-token") is not None


def test_installing_without_api_tokens_fails_with_a_message_naming_the_value(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"secrets\.apiTokens is required"):
        render(chart, {"secrets": {"apiTokens": ""}})


def test_an_existing_secret_needs_no_api_tokens_value(chart: helm_python.Chart) -> None:
    docs = render(chart, {"secrets": {"existingSecret": "shop-db", "apiTokens": ""}})
    assert not [d for d in docs if d["kind"] == "Secret"]


@pytest.mark.parametrize("tokens", ["admin=chart-admin-token-1234", "storefront=short", "storefront",
                                    "storefront:-ops=chart-storefront-token"])
def test_malformed_api_tokens_are_rejected_by_the_values_schema(chart: helm_python.Chart, tokens: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="apiTokens"):
        render(chart, {"secrets": {"apiTokens": tokens}})


def test_metrics_are_open_and_worker_metrics_off_by_default_in_compose_and_the_chart(chart: helm_python.Chart) -> None:
    defaults = Settings.from_env({})
    assert (defaults.metrics_role, defaults.stuck_after_s, defaults.worker_metrics_port) == ("", 60, 0)
    for env in (shared_env(), settings_env(render(chart))):
        settings = Settings.from_env(env)
        assert (settings.metrics_role, settings.stuck_after_s, settings.worker_metrics_port) == ("", 60, 0)
    worker = pod_spec(one(render(chart), "Deployment", "worker"))["containers"][0]
    assert "ports" not in worker


def test_a_worker_metrics_port_opens_a_named_port_on_the_worker_pods(chart: helm_python.Chart) -> None:
    docs = render(chart, {"config": {"workerMetricsPort": 9100, "metricsRole": "viewer", "stuckAfterS": 120}})
    worker = pod_spec(one(docs, "Deployment", "worker"))["containers"][0]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    settings = Settings.from_env(settings_env(docs))
    assert (settings.metrics_role, settings.stuck_after_s, settings.worker_metrics_port) == ("viewer", 120, 9100)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_the_values_schema_rejects_a_metrics_role_that_is_not_a_role(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="metricsRole"):
        render(chart, {"config": {"metricsRole": "admin"}})


# ---------------------------------------------------------------- Kubernetes: one entry point, autoscaling, lifecycle

KEDA = {"worker": {"autoscaling": {"keda": {"enabled": True}}}}
INGRESS = {"ingress": {"enabled": True, "className": "nginx", "host": "shop.example.org"}}
EVERYTHING_ON = {
    **BEAT_ON,
    "ingress": {"enabled": True, "className": "nginx", "host": "shop.example.org",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "64k"},
                "tls": {"enabled": True, "secretName": "shop-tls"},
                "flower": {"enabled": True, "host": "flower.shop.example.org"}},
    "secrets": {"flowerBasicAuth": "ops:flower-password"},
    "worker": {"autoscaling": {"keda": {"enabled": True, "authenticationRef": "redis-auth",
                                        "stepsInFlight": {"enabled": True, "target": 120}}}},
    "config": {"workerMetricsPort": 9100},
}
VALUE_SETS = {
    "defaults": {},
    "sandbox-disabled": EXTERNAL_PROVIDERS,
    "everything-on": EVERYTHING_ON,
    "autoscaling-and-pdb-off": {"api": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
                                "worker": {"autoscaling": {"enabled": False},
                                           "podDisruptionBudget": {"enabled": False}}},
    "existing-secret-keda": {"secrets": {"existingSecret": "shop-secrets", "apiTokens": ""},
                             "worker": {"autoscaling": {"keda": {"enabled": True, "redisAddress": "cache:6380"}}},
                             **INGRESS},
}
# Objects of values.yaml the schema leaves open, and who checks their insides instead.
FREE_FORM = {
    "global": "Helm's own",
    "podSecurityContext": "kubernetes-validate, once rendered",
    "securityContext": "kubernetes-validate, once rendered",
    "podAnnotations": "kubernetes-validate, once rendered",
    "nodeSelector": "kubernetes-validate, once rendered",
    "affinity": "kubernetes-validate, once rendered",
    "resources": "kubernetes-validate, once rendered (api, worker, beat, flower, sandbox, migration)",
    "config.stepPolicies": "Settings.from_env (STEP_POLICIES)",
    "config.breakerPolicies": "Settings.from_env (BREAKER_POLICIES)",
    "config.bulkheadMaxCalls": "Settings.from_env (BULKHEAD_MAX_CALLS)",
    "ingress.annotations": "the schema: strings only",
}


def validate_manifest(doc: dict[str, Any], version: str) -> None:
    """A manifest against the Kubernetes schemas of `version`, a ScaledObject against KEDA's CRD schema."""
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, json.loads(KEDA_SCHEMA.read_text()))
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_the_supported_kubernetes_versions_are_the_charts_kube_version_and_the_newest_schemas_installed() -> None:
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["kubeVersion"] == f">={OLDEST_KUBE}-0"
    installed = kubernetes_validate.utils.all_versions()
    assert OLDEST_KUBE in installed and NEWEST_KUBE in installed


@pytest.mark.parametrize("version", [OLDEST_KUBE, NEWEST_KUBE])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_of_every_value_set_is_valid_for_the_oldest_and_newest_kubernetes(
    chart: helm_python.Chart, name: str, version: str
) -> None:
    docs = render(chart, VALUE_SETS[name])
    assert len(docs) >= 8
    for doc in docs:
        validate_manifest(doc, version)


@pytest.mark.parametrize("version", [OLDEST_KUBE, NEWEST_KUBE])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_chart_lints_strictly_with_every_value_set(name: str, version: str) -> None:
    report = helm_python.lint(CHART, with_tokens(VALUE_SETS[name]), strict=True, kube_version=f"v{version}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_keda_schema_refuses_what_keda_refuses() -> None:
    """The vendored schema is strict: a misspelt field or a number where KEDA wants a string fails."""
    schema = json.loads(KEDA_SCHEMA.read_text())
    good = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "w"},
            "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"type": "redis", "metadata": {"listLength": "5"}}]}}
    jsonschema.validate(good, schema)
    for bad in ({**good, "spec": {**good["spec"], "minReplicas": 1}},
                {**good, "spec": {**good["spec"], "triggers": [{"type": "redis", "metadata": {"listLength": 5}}]}},
                {**good, "spec": {"triggers": good["spec"]["triggers"]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_every_value_in_values_yaml_is_described_by_the_schema_which_takes_no_other_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    undescribed: list[str] = []

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        leaf_name = path.rpartition(".")[2]
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'the root'} takes values it does not name"
            assert isinstance(value, dict), path
            for key, item in value.items():
                if key not in node["properties"]:
                    undescribed.append(f"{path}.{key}".lstrip("."))
                else:
                    walk(item, node["properties"][key], f"{path}.{key}".lstrip("."))
        elif isinstance(value, dict):
            assert path in FREE_FORM or leaf_name in FREE_FORM, f"{path} is an object the schema leaves open"
            assert node.get("type") == "object", path
        else:
            assert {"type", "enum", "const"} & set(node), f"{path} has no type in the schema"

    walk(values, schema, "")
    assert not undescribed, f"values.yaml sets values the schema does not describe: {undescribed}"


def test_every_object_the_values_schema_names_the_fields_of_takes_no_other_field() -> None:
    def walk(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                yield path
            for key, child in node.get("properties", {}).items():
                yield from walk(child, f"{path}.{key}")

    assert list(walk(json.loads((CHART / "values.schema.json").read_text()), "")) == []


def test_every_name_infra_config_reads_is_in_the_readme_configuration_table() -> None:
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| ([^|]+)\|", section, re.M))
    names = {name for cell in documented for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    missing = config_env_names() - names
    assert not missing, f"the README's configuration table lacks {sorted(missing)}"


def test_the_chart_and_compose_run_the_same_processes_under_the_same_names(chart: helm_python.Chart) -> None:
    docs = render(chart, BEAT_ON)
    chart_components = {component_of(d) for d in docs if d["kind"] in ("Deployment", "Job")}
    assert chart_components == BOOKMARKET_SERVICES


def test_every_long_running_compose_service_has_a_healthcheck_like_its_chart_probe() -> None:
    services = compose()["services"]
    for name in ("postgres", "redis", "api", "worker", "flower", "sandbox"):
        assert "healthcheck" in services[name], name
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])


def test_compose_runs_beat_only_when_asked_as_every_worker_sweeps() -> None:
    services = compose()["services"]
    assert services["beat"]["profiles"] == ["beat"]
    assert Settings.from_env(shared_env()).sweep_in_worker is True


def test_beat_is_off_by_default_as_every_worker_sweeps_and_required_when_they_do_not(chart: helm_python.Chart) -> None:
    docs = render(chart)
    assert not [d for d in docs if component_of(d) == "beat"]
    assert settings_env(docs)["SWEEP_IN_WORKER"] == "1"
    with pytest.raises(helm_python.HelmRenderError, match=r"beat\.enabled is required"):
        render(chart, {"config": {"sweepInWorker": False}})
    beat = one(render(chart, {"config": {"sweepInWorker": False}, **BEAT_ON}), "Deployment", "beat")
    assert (beat["spec"]["replicas"], beat["spec"]["strategy"]["type"]) == (1, "Recreate")


def test_the_api_is_autoscaled_on_cpu_from_the_values_and_its_deployment_leaves_replicas_to_the_hpa(
    chart: helm_python.Chart,
) -> None:
    values = {"api": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 20,
                                      "targetCPUUtilizationPercentage": 20}}}
    docs = render(chart, values)
    hpa = one(docs, "HorizontalPodAutoscaler", "api")
    deployment = one(docs, "Deployment", "api")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 20}}}]
    assert pod_spec(deployment)["containers"][0]["resources"]["requests"]["cpu"], "utilization needs a CPU request"


def test_an_autoscaler_whose_minimum_is_above_its_maximum_fails_naming_the_value(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"api\.autoscaling\.minReplicas"):
        render(chart, {"api": {"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}})
    with pytest.raises(helm_python.HelmRenderError, match=r"worker\.autoscaling\.minReplicas"):
        render(chart, {"worker": {"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}})


def test_workers_scale_on_cpu_without_keda(chart: helm_python.Chart) -> None:
    docs = render(chart, {"worker": {"autoscaling": {"minReplicas": 2, "maxReplicas": 8,
                                                     "targetCPUUtilizationPercentage": 60}}})
    assert not kinds(docs, "ScaledObject")
    hpa = one(docs, "HorizontalPodAutoscaler", "worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment", "worker")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert "replicas" not in one(docs, "Deployment", "worker")["spec"]


def test_with_keda_workers_scale_on_the_length_of_the_saga_queue_in_the_brokers_redis(
    chart: helm_python.Chart,
) -> None:
    values = {"config": {"sagaQueue": "orders"},
              "secrets": {"redisUrl": "redis://broker.data.svc:6380/3"},
              "worker": {"autoscaling": {"minReplicas": 1, "maxReplicas": 30,
                                         "keda": {"enabled": True, "queueLength": 150}}}}
    docs = render(chart, values)
    assert not [d for d in kinds(docs, "HorizontalPodAutoscaler") if component_of(d) == "worker"]
    scaled = one(docs, "ScaledObject", "worker")
    validate_manifest(scaled, NEWEST_KUBE)
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == one(docs, "Deployment", "worker")["metadata"]["name"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 30)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    env = settings_env(docs)
    redis_url = urlsplit(env["REDIS_URL"])
    assert trigger["metadata"]["listName"] == env["SAGA_QUEUE"] == Settings.from_env(env).queue == "orders"
    assert trigger["metadata"]["address"] == f"{redis_url.hostname}:{redis_url.port}"
    assert trigger["metadata"]["databaseIndex"] == redis_url.path.lstrip("/") == "3"
    assert trigger["metadata"]["listLength"] == "150"


@pytest.mark.parametrize(("config", "queues"), [
    ({"stepQueues": "payment=bm.payment, delivery=bm.delivery,messaging=bm.payment"},
     ["orders", "bm.payment", "bm.delivery"]),
    ({"stepQueues": "payment=bm.payment", "workerQueues": "bm.payment"}, ["bm.payment"]),
], ids=["every-queue", "worker-queues"])
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_with_keda_workers_scale_on_every_queue_they_consume(
    chart: helm_python.Chart, config: dict[str, str], queues: list[str], broker: str,
) -> None:
    values = {"config": {"sagaQueue": "orders", **config},
              "worker": {"autoscaling": {"keda": {"enabled": True, "broker": broker}}}}
    docs = render(chart, values)
    scaled = one(docs, "ScaledObject", "worker")
    validate_manifest(scaled, NEWEST_KUBE)
    triggers = scaled["spec"]["triggers"]
    key = "listName" if broker == "redis" else "queueName"
    assert [t["metadata"][key] for t in triggers] == queues
    assert {t["type"] for t in triggers} == {broker}
    assert len({t["name"] for t in triggers}) == len(triggers)  # KEDA needs the names apart
    env = settings_env(docs)
    assert list(Settings.from_env(env).consumed_queues()) == queues  # what `bookmarket worker` consumes


@pytest.mark.parametrize("values", [{"secrets": {"brokerUrl": "amqp://shop:secret@rabbitmq.data.svc:5672/shop"}},
                                    {"secrets": {"existingSecret": "shop-secrets", "apiTokens": ""},
                                     "worker": {"autoscaling": {"keda": {"broker": "rabbitmq"}}}}],
                         ids=["broker-url", "existing-secret"])
def test_with_keda_on_rabbitmq_workers_scale_on_the_quorum_queue_read_from_broker_url(
    chart: helm_python.Chart, values: dict[str, Any],
) -> None:
    keda = {"enabled": True, "queueLength": 120, **values.get("worker", {}).get("autoscaling", {}).get("keda", {})}
    docs = render(chart, {**values, "config": {"sagaQueue": "orders"}, "worker": {"autoscaling": {"keda": keda}}})
    scaled = one(docs, "ScaledObject", "worker")
    validate_manifest(scaled, NEWEST_KUBE)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {"protocol": "amqp", "hostFromEnv": "BROKER_URL", "queueName": "orders",
                                   "mode": "QueueLength", "value": "120"}
    if "brokerUrl" in values["secrets"]:
        secret = one(docs, "Secret", "config")["stringData"]
        assert secret["BROKER_URL"] == values["secrets"]["brokerUrl"]
        assert Settings.from_env(secret).broker_url.startswith("amqp://")


def test_keda_can_also_scale_on_the_steps_in_flight_read_from_the_workers_database_url(
    chart: helm_python.Chart,
) -> None:
    docs = render(chart, EVERYTHING_ON)
    triggers = {t["type"]: t for t in one(docs, "ScaledObject", "worker")["spec"]["triggers"]}
    postgres = triggers["postgresql"]
    assert postgres["metadata"]["connectionFromEnv"] == "DATABASE_URL" in settings_env(docs)
    assert postgres["metadata"]["targetQueryValue"] == "120"
    assert "saga_steps" in postgres["metadata"]["query"]
    assert all(t["authenticationRef"] == {"name": "redis-auth"} for t in triggers.values())


def test_keda_with_an_existing_secret_needs_the_redis_address_as_a_value(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"keda\.redisAddress is required"):
        render(chart, {"secrets": {"existingSecret": "shop-secrets"}, **KEDA})
    docs = render(chart, VALUE_SETS["existing-secret-keda"])
    assert one(docs, "ScaledObject", "worker")["spec"]["triggers"][0]["metadata"]["address"] == "cache:6380"


def test_the_values_schema_refuses_scaling_workers_to_zero_as_they_run_the_sweeper(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="minReplicas"):
        render(chart, {"worker": {"autoscaling": {"minReplicas": 0}}})


@pytest.mark.parametrize("component", ["api", "worker"])
def test_a_disruption_budget_lets_a_drain_take_one_pod_of_the_api_and_of_the_workers_at_a_time(
    chart: helm_python.Chart, component: str
) -> None:
    docs = render(chart)
    pdb = one(docs, "PodDisruptionBudget", component)
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = one(docs, "Deployment", component)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    others = [d for d in kinds(docs, "Deployment") if component_of(d) != component]
    assert not [d for d in others if pdb["spec"]["selector"]["matchLabels"].items()
                <= d["spec"]["template"]["metadata"]["labels"].items()]
    off = render(chart, {component: {"podDisruptionBudget": {"enabled": False}}})
    assert [component_of(d) for d in kinds(off, "PodDisruptionBudget")] == [c for c in ("api", "worker")
                                                                             if c != component]


def test_an_api_pod_leaves_the_endpoints_before_gunicorn_stops_and_gets_time_to_finish_its_requests(
    chart: helm_python.Chart,
) -> None:
    from cli.main import gunicorn_api

    argv = gunicorn_api("0.0.0.0", 8080)
    graceful = float(argv[argv.index("--graceful-timeout") + 1])
    deployment = one(render(chart, {"api": {"preStopSleepS": 7}}), "Deployment", "api")
    spec = pod_spec(deployment)
    assert spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert spec["terminationGracePeriodSeconds"] > 7 + graceful
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert spec["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_an_api_grace_period_too_short_for_the_prestop_sleep_and_gunicorns_drain_fails_naming_the_values(
    chart: helm_python.Chart,
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"api\.terminationGracePeriodSeconds \(15\).*preStopSleepS"):
        render(chart, {"api": {"terminationGracePeriodSeconds": 15, "preStopSleepS": 5}})
    assert pod_spec(one(render(chart, {"api": {"terminationGracePeriodSeconds": 16, "preStopSleepS": 5}}),
                        "Deployment", "api"))["terminationGracePeriodSeconds"] == 16


def test_worker_pods_stop_taking_work_on_sigterm_itself_and_drain_within_their_grace(
    chart: helm_python.Chart,
) -> None:
    """Celery's warm shutdown cancels the consumer on SIGTERM: no preStop hook would stop new work sooner."""
    spec = pod_spec(one(render(chart), "Deployment", "worker"))
    assert "lifecycle" not in spec["containers"][0]
    assert spec["terminationGracePeriodSeconds"] >= float(Settings.from_env({}).shutdown_grace_s) + 10


def test_no_ingress_unless_enabled(chart: helm_python.Chart) -> None:
    assert not kinds(render(chart), "Ingress")


def test_the_ingress_sends_every_path_of_its_host_console_and_docs_included_to_the_api_service(
    chart: helm_python.Chart,
) -> None:
    docs = render(chart, INGRESS)
    [ingress] = kinds(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "tls" not in ingress["spec"]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "shop.example.org"
    service = one(docs, "Service", "api")

    def backend_of(path: str) -> dict[str, Any]:
        matches = [p for p in rule["http"]["paths"] if p["pathType"] == "Prefix"
                   and (path == p["path"] or path.startswith(p["path"].rstrip("/") + "/"))]
        return max(matches, key=lambda p: len(p["path"]))["backend"]["service"]

    for path in ("/console", "/console/static/app.js", "/docs", "/openapi.json", "/orders", "/admin/sagas",
                 "/readyz"):
        backend = backend_of(path)
        assert backend["name"] == service["metadata"]["name"], path
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_ingress_terminates_tls_for_its_hosts_when_asked(chart: helm_python.Chart) -> None:
    [ingress] = kinds(render(chart, EVERYTHING_ON), "Ingress")
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.org", "flower.shop.example.org"],
                                       "secretName": "shop-tls"}]
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-body-size": "64k"}
    default_secret = render(chart, {"ingress": {**INGRESS["ingress"], "tls": {"enabled": True}}})
    assert kinds(default_secret, "Ingress")[0]["spec"]["tls"][0]["secretName"] == f"{RELEASE}-bookmarket-tls"


def test_flower_gets_a_host_of_its_own_behind_its_login_only_when_enabled(chart: helm_python.Chart) -> None:
    docs = render(chart, EVERYTHING_ON)
    [ingress] = kinds(docs, "Ingress")
    flower_rule = next(r for r in ingress["spec"]["rules"] if r["host"] == "flower.shop.example.org")
    backend = flower_rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(docs, "Service", "flower")["metadata"]["name"]
    env = settings_env(docs)
    assert Settings.from_env(env).flower_basic_auth == "ops:flower-password"
    assert env["FLOWER_URL"] == "https://flower.shop.example.org"
    plain = kinds(render(chart, INGRESS), "Ingress")[0]
    assert [r["host"] for r in plain["spec"]["rules"]] == ["shop.example.org"]
    flower_off = {**EVERYTHING_ON, "flower": {"enabled": False}}
    assert [r["host"] for r in kinds(render(chart, flower_off), "Ingress")[0]["spec"]["rules"]] == ["shop.example.org"]


def test_exposing_flower_without_its_login_fails_naming_the_value(chart: helm_python.Chart) -> None:
    values = {**EVERYTHING_ON, "secrets": {}}
    with pytest.raises(helm_python.HelmRenderError, match=r"secrets\.flowerBasicAuth"):
        render(chart, values)


def test_the_values_schema_refuses_an_ingress_host_that_is_not_a_host_name(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="host"):
        render(chart, {"ingress": {"enabled": True, "host": "https://shop.example.org/"}})


def test_the_provider_urls_are_in_the_configmap_and_the_credentials_in_the_secret_with_every_value_set(
    chart: helm_python.Chart,
) -> None:
    for name, values in VALUE_SETS.items():
        docs = render(chart, values)
        [config] = kinds(docs, "ConfigMap")
        assert {"PAYMENT_URL", "DELIVERY_URL", "MESSAGING_URL", "SANDBOX_URL"} <= set(config["data"]), name
        assert not SECRET_NAMES & set(config["data"]), name
        secret = values.get("secrets", {}).get("existingSecret") or f"{RELEASE}-bookmarket"
        for doc in kinds(docs, "Deployment"):
            assert {"secretRef": {"name": secret}} in pod_spec(doc)["containers"][0]["envFrom"], name


def test_compose_gives_the_api_and_the_workers_longer_than_their_drain_before_sigkill() -> None:
    from cli.main import gunicorn_api

    argv = gunicorn_api("0.0.0.0", 8080)
    graceful = float(argv[argv.index("--graceful-timeout") + 1])
    services = compose()["services"]

    def seconds(duration: str) -> float:
        assert duration.endswith("s"), duration
        return float(duration[:-1])

    assert seconds(services["api"]["stop_grace_period"]) > graceful
    assert seconds(services["worker"]["stop_grace_period"]) > float(shared_env()["WORKER_SHUTDOWN_GRACE_S"])


def test_the_readmes_helm_install_tokens_separated_by_a_space_pass_the_schema_and_parse(
    chart: helm_python.Chart,
) -> None:
    """`helm --set` splits values at commas, so the README separates the token entries with a space."""
    section = README.read_text().split("\n## Deploying on Kubernetes\n", 1)[1]
    assert '--set secrets.apiTokens="storefront=$(openssl rand -hex 24) support=$(openssl rand -hex 24)"' in section
    tokens = f"storefront={'a1' * 24} support={'b2' * 24}"
    docs = render(chart, {"secrets": {"apiTokens": tokens}})
    assert Settings.from_env(settings_env(docs)).api_tokens.describe() == ["storefront:storefront", "support:support"]
