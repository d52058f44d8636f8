"""deploy/ holds what runs prost across machines: the image, compose and Kubernetes.

Docker and a cluster are not available where the tests run, so these tests read the
files as data and check what would otherwise only fail at deploy time: every part
of prost is there with the right command, the settings it needs (from the secret
where they are secret), probes on /health and /ready, replicas, and a migration step
that runs `prost migrate` before the services start.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from prost.kit.settings import SERVICES, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
PARTS = ("gateway", *SERVICES)
PEERS_NEEDED = {"gateway": SERVICES, "cart": ("catalog",), "orders": ("catalog", "payments")}
REPLICAS = {"orders": 2, "catalog": 2}
SECRET_SETTINGS = ("PROST_DATABASE_URL", "PROST_BROKER_URL", "PROST_JWT_SECRET")
SETTING_NAMES = {f"PROST_{name.upper()}" for name in Settings.model_fields}
# uvicorn's: whose X-Forwarded-For to believe (the services: the gateway's)
FORWARDED = "FORWARDED_ALLOW_IPS"


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- the image -------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_dockerfile_builds_one_image_on_python_slim_that_runs_prost_as_a_non_root_user() -> None:
    instructions = _dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for word, a in instructions if word == "ARG" and "=" in a}
    bases = [a.split()[0] for word, a in instructions if word == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) for base in bases]
    assert resolved, "no FROM"
    assert all(base == "python:3.11-slim" for base in resolved), resolved

    last_stage = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    entrypoints = [a for w, a in last_stage if w == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["prost"]]
    users = [a for w, a in last_stage if w == "USER"]
    assert users, "the final stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    # Kubernetes' runAsNonRoot needs a numeric uid; the manifests pin the same one.
    assert users[-1].split(":")[0] == "10001"

    runs = " ".join(a for w, a in instructions if w == "RUN")
    assert re.search(r"pip install [^&]*\.(\s|$)", runs), "the image must install the package itself"
    envs = " ".join(a for w, a in last_stage if w == "ENV")
    assert "PROST_HTTP_HOST=0.0.0.0" in envs, "inside a container the server must listen beyond loopback"


def test_the_build_context_sends_only_what_the_image_needs() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!src/"]


# --- compose ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _interpolated_names(value: str) -> list[str]:
    return re.findall(r"\$\{(\w+)", value)


def test_compose_has_postgres_and_rabbitmq_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    assert "rabbitmq-diagnostics" in " ".join(services["rabbitmq"]["healthcheck"]["test"])


def test_compose_migrates_once_before_any_service_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "PROST_DATABASE_URL" in migrate["environment"]
    for part in PARTS:
        assert services[part]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", part


@pytest.mark.parametrize("part", PARTS)
def test_compose_runs_each_part_from_the_one_image_with_its_command(compose: dict[str, Any], part: str) -> None:
    services = compose["services"]
    service = services[part]
    assert service["command"] == ["serve", part]
    assert service["image"] == services["migrate"]["image"]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert service.get("deploy", {}).get("replicas", 1) == REPLICAS.get(part, 1)
    test = " ".join(service["healthcheck"]["test"])
    assert "/ready" in test


@pytest.mark.parametrize("part", PARTS)
def test_compose_gives_each_part_the_database_broker_secret_and_its_peers(compose: dict[str, Any], part: str) -> None:
    services = compose["services"]
    env: dict[str, str] = services[part]["environment"]
    unknown = set(env) - SETTING_NAMES - {FORWARDED}
    assert not unknown, f"not a prost setting: {unknown}"
    assert env["PROST_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["PROST_DATABASE_URL"]
    assert env["PROST_BROKER_URL"].startswith("amqp://")
    assert "@rabbitmq:5672/" in env["PROST_BROKER_URL"]
    # No secret is committed: the values come from deploy/.env, and compose refuses
    # to start while one is missing (`${NAME:?message}`).
    assert re.fullmatch(r"\$\{PROST_JWT_SECRET:\?[^}]+\}", env["PROST_JWT_SECRET"])
    assert "${POSTGRES_PASSWORD:?" in env["PROST_DATABASE_URL"]
    assert "${RABBITMQ_PASSWORD:?" in env["PROST_BROKER_URL"]
    assert env["PROST_HTTP_HOST"] == "0.0.0.0"
    port = int(env["PROST_HTTP_PORT"])
    for peer in PEERS_NEEDED.get(part, ()):
        url = env[f"PROST_{peer.upper()}_URL"]
        assert url == f"http://{peer}:{port}", f"{part} reaches {peer} at {url}"
        assert services[peer]["command"] == ["serve", peer]


async def _address_seen(trusted: str, *, peer: str, forwarded_for: str) -> str:
    """The client address an app behind uvicorn's proxy-header handling sees."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"][0])

    middleware = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]
    scope = {"type": "http", "client": (peer, 40000), "headers": [(b"x-forwarded-for", forwarded_for.encode())]}
    await middleware(scope, None, None)  # type: ignore[arg-type]
    return seen[0]


@pytest.mark.parametrize("service", SERVICES)
async def test_compose_services_see_the_client_address_the_gateway_forwards_and_no_forged_one(
    compose: dict[str, Any], service: str
) -> None:
    # The users service limits failed logins per client address: behind the gateway
    # it must see the client's address, not the gateway's, and not one the client made
    # up (the gateway appends the address it saw to whatever the client sent).
    trusted = compose["services"][service]["environment"][FORWARDED]
    gateway_container = "172.18.0.7"
    assert await _address_seen(trusted, peer=gateway_container, forwarded_for="203.0.113.9") == "203.0.113.9"
    forged = "198.51.100.1, 10.1.2.3, 203.0.113.9"
    assert await _address_seen(trusted, peer=gateway_container, forwarded_for=forged) == "203.0.113.9"
    # A caller outside the private networks is not believed at all.
    assert await _address_seen(trusted, peer="203.0.113.50", forwarded_for="198.51.100.1") == "203.0.113.50"


def test_compose_gateway_believes_no_forwarded_address(compose: dict[str, Any]) -> None:
    # Clients reach it directly through the published port.
    assert FORWARDED not in compose["services"]["gateway"]["environment"]


def test_compose_publishes_only_the_gateway_on_port_8000(compose: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert list(published) == ["gateway"]
    (mapping,) = published["gateway"]
    assert mapping.endswith(":8000")
    assert re.fullmatch(r"\$\{PROST_PUBLIC_PORT:-8000\}:8000", mapping)


def test_compose_commits_no_secret_value(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for name in (
        "PROST_JWT_SECRET",
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
        "PROST_ADMIN_PASSWORD",
        "RABBITMQ_DEFAULT_PASS",
    ):
        for match in re.finditer(rf"^\s+{name}:\s*(\S.*)$", text, flags=re.MULTILINE):
            assert match.group(1).startswith("${"), f"{name} has a literal value in compose.yaml"
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_the_secrets_script_writes_every_variable_compose_requires() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    script = (DEPLOY / "gen-secrets.sh").read_text()
    written = set(re.findall(r'echo "(\w+)=', script))
    assert required, "compose should require its secrets"
    assert required <= written, f"gen-secrets.sh misses {required - written}"


# --- Kubernetes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "secret.example.yaml"):
            continue
        docs.extend(_load_all(path))
    return docs


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _secret_template() -> dict[str, Any]:
    (secret,) = _load_all(K8S / "secret.example.yaml")
    return secret


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_manifest_is_well_formed_and_lives_in_the_prost_namespace(manifests: list[dict[str, Any]]) -> None:
    namespaces = _of_kind(manifests, "Namespace")
    assert list(namespaces) == ["prost"]
    for doc in manifests:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "prost", doc["metadata"]["name"]


def test_kustomization_applies_every_manifest_but_the_secret_template(manifests: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk
    assert "secret.example.yaml" not in listed


def test_the_configmap_holds_only_known_non_secret_settings_and_the_peer_urls(manifests: list[dict[str, Any]]) -> None:
    config = _of_kind(manifests, "ConfigMap")["prost-config"]["data"]
    assert set(config) <= SETTING_NAMES, set(config) - SETTING_NAMES
    assert not set(config) & set(SECRET_SETTINGS)
    assert config["PROST_HTTP_HOST"] == "0.0.0.0"
    services = _of_kind(manifests, "Service")
    for service in SERVICES:
        url = config[f"PROST_{service.upper()}_URL"]
        match = re.fullmatch(r"http://([a-z-]+):(\d+)", url)
        assert match, url
        ports = {p["port"] for p in services[match.group(1)]["spec"]["ports"]}
        assert int(match.group(2)) in ports, url


def test_the_secret_template_holds_placeholders_only() -> None:
    secret = _secret_template()
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "prost-secrets"
    values = secret["stringData"]
    assert set(SECRET_SETTINGS) <= set(values)
    for key, value in values.items():
        if key != "PROST_ADMIN_EMAIL":
            assert "REPLACE_ME" in value, f"{key} looks like a real value"
    text = (K8S / "secret.example.yaml").read_text()
    assert "kubectl -n prost create secret generic prost-secrets" in text


@pytest.mark.parametrize("part", PARTS)
async def test_each_part_has_a_deployment_with_command_secret_env_probes_and_resources(
    manifests: list[dict[str, Any]], part: str
) -> None:
    deployment = _of_kind(manifests, "Deployment")[part]
    spec = deployment["spec"]
    assert spec["replicas"] == REPLICAS.get(part, 1)
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == ["serve", part]
    assert "command" not in container, "the image's entrypoint (prost) must stay"
    assert container["image"].split(":")[0] == "prost"

    env = _env(container)
    secret = _secret_template()
    for name in SECRET_SETTINGS:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
        assert not ref.get("optional", False)
    assert {"configMapRef": {"name": "prost-config"}} in container["envFrom"]
    forwarded = env[FORWARDED]["value"]
    assert await _address_seen(forwarded, peer="10.244.1.7", forwarded_for="198.51.100.1, 203.0.113.9") == "203.0.113.9"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = _of_kind(manifests, "ConfigMap")["prost-config"]["data"]
    assert ports["http"] == int(config["PROST_HTTP_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    resources = container["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


@pytest.mark.parametrize("part", PARTS)
def test_each_part_has_a_cluster_service_that_selects_its_pods(manifests: list[dict[str, Any]], part: str) -> None:
    service = _of_kind(manifests, "Service")[part]
    deployment = _of_kind(manifests, "Deployment")[part]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"


def test_only_the_gateway_is_reachable_from_outside(manifests: list[dict[str, Any]]) -> None:
    ingresses = _of_kind(manifests, "Ingress")
    backends = [
        path["backend"]["service"]["name"]
        for ingress in ingresses.values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == ["gateway"]
    assert not [
        s for s in _of_kind(manifests, "Service").values() if s["spec"].get("type") in ("LoadBalancer", "NodePort")
    ]


def test_the_migration_job_runs_prost_migrate_with_the_database_from_the_secret(
    manifests: list[dict[str, Any]],
) -> None:
    (job,) = _of_kind(manifests, "Job").values()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert "command" not in container
    images = {
        d["spec"]["template"]["spec"]["containers"][0]["image"] for d in _of_kind(manifests, "Deployment").values()
    }
    assert images == {container["image"]}
    ref = _env(container)["PROST_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "prost-secrets", "key": "PROST_DATABASE_URL"}


def test_only_prost_pods_reach_the_services_that_believe_forwarded_addresses(manifests: list[dict[str, Any]]) -> None:
    policies = _of_kind(manifests, "NetworkPolicy")
    guarded = policies["services-from-prost-only"]["spec"]
    (selector,) = guarded["podSelector"]["matchExpressions"]
    assert set(selector["values"]) == set(SERVICES)
    (rule,) = guarded["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "prost"}}}]


def test_replicated_parts_keep_one_pod_through_disruptions(manifests: list[dict[str, Any]]) -> None:
    budgets = _of_kind(manifests, "PodDisruptionBudget")
    for part in REPLICAS:
        assert budgets[part]["spec"]["minAvailable"] == 1


# --- the docs agree with the files ------------------------------------------------------


def test_deploy_readme_names_only_files_that_exist() -> None:
    readme = (DEPLOY / "README.md").read_text()
    named = set(re.findall(r"(?<![\w/.])deploy/[\w./-]*\w", readme))
    assert "deploy/k8s/namespace.yaml" in named
    for path in named - {"deploy/.env"}:  # made by gen-secrets.sh, never committed
        assert (DEPLOY.parent / path).exists(), f"README names {path}"
