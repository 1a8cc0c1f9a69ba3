"""deploy/kubernetes: the manifests validate offline against the Kubernetes schemas that
`kubernetes-validate` ships, the ConfigMap is a tokend config, and the pieces agree."""

from __future__ import annotations

import copy
import secrets
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tokend import config, crypto, daemon

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "systemd" / "tokend.service"
# The oldest Kubernetes the manifests promise (README.md there), and the newest shipped.
VERSIONS = ["1.29.0", kv_utils.latest_version()]


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    return doc


def validate(doc: dict[str, Any], version: str) -> None:
    """Strict: an unknown field fails too. A kind without a schema is a failure, not the
    warning the command line prints."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kv_utils.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


def app_config() -> str:
    return one("ConfigMap")["data"]["tokend.toml"]


def secret_files(data: Any) -> set[str]:
    """Every `*_file` value in a TOML document."""
    if not isinstance(data, dict):
        return set()
    found = {v for k, v in data.items() if k.endswith("_file")}
    return found.union(*(secret_files(v) for v in data.values()))


def pod_specs() -> dict[str, dict[str, Any]]:
    return {kind: one(kind)["spec"]["template"]["spec"] for kind in ("Deployment", "Job")}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_every_kind_is_there() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service"]


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    for doc in documents():
        validate(doc, version)


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}),
    lambda d: d["spec"].update(replicas="two"),
    lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot="yes"),
], ids=["unknown-field", "wrong-type", "wrong-type-nested"])
def test_the_validator_rejects_a_broken_deployment(break_it) -> None:
    broken = copy.deepcopy(one("Deployment"))
    break_it(broken)
    with pytest.raises(kv_utils.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_configmap_is_a_tokend_config_whose_secrets_the_pod_mounts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = one("Deployment")["spec"]["template"]["spec"]
    (container,) = deployment["containers"]
    (secret_volume,) = [v for v in deployment["volumes"] if "secret" in v]
    items = {i["path"] for i in secret_volume["secret"]["items"]}
    wanted = secret_files(tomllib.loads(app_config()))
    assert wanted == items, "the config's *_file names and the mounted Secret keys differ"
    assert env_of(container)["CREDENTIALS_DIRECTORY"] == mounts(container)[secret_volume["name"]]

    # What the Secret holds, as `kubectl create secret` from README.md makes it.
    values = {"tokend-database-url": "postgresql://tokend:pw@postgres:5432/tokend",
              "tokend-keys": crypto.generate_key_line("k1"),
              "tokend-admin-token": secrets.token_urlsafe(32),
              "tokend-consumer-token": secrets.token_urlsafe(32),
              "ebay-client-secret": "PRD-" + secrets.token_hex(12)}
    assert set(values) == items
    creds = tmp_path / "secrets"
    creds.mkdir()
    for name, value in values.items():
        (creds / name).write_text(value + "\n")
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "tokend.toml").write_text(app_config())
    for name in ("TOKEND_ENCRYPTION_KEYS", "TOKEND_ADMIN_TOKEN", "TOKEND_CONSUMER_TOKEN",
                 "TOKEND_PROVIDER_EBAY_PRODUCTION_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))

    cfg = config.load(config_dir / "tokend.toml")

    assert cfg.database.url == values["tokend-database-url"]
    assert cfg.crypto.keyring().primary_kid == "k1"
    assert cfg.server.admin_token == values["tokend-admin-token"]
    assert cfg.providers["ebay-production"].client_secret == values["ebay-client-secret"]
    assert cfg.server.host == "0.0.0.0"  # reachable by the kubelet and the Service
    config_volume = next(v for v in deployment["volumes"] if "configMap" in v)
    assert config_volume["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    assert env_of(container)["TOKEND_CONFIG"] == (
        mounts(container)[config_volume["name"]] + "/tokend.toml")


def test_a_rotated_secret_reaches_the_running_pods() -> None:
    """The kubelet updates a Secret volume's files in place (not under a subPath, not in
    env), and the daemon looks at them: tests/test_reload.py runs that swap for real."""
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "run"
    watch = args.index("--watch-secrets")
    assert 0 < float(args[watch + 1]) <= 60
    assert all("subPath" not in m and "subPathExpr" not in m
               for m in container["volumeMounts"])
    assert not [e for e in container["env"] if "valueFrom" in e], \
        "a secret in the environment needs a restart to change"


def test_probes_port_and_shutdown_budget() -> None:
    data = tomllib.loads(app_config())
    server, refresh = data["server"], data["refresh"]
    spec = one("Deployment")["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] >= 2
    assert container["command"] + container["args"][:1] == ["tokend", "run"]
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", server["port"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["port"] == "http"
    # The readiness ping gives up before the probe does, so a slow database reads as
    # "not ready" rather than as a probe timeout.
    assert container["readinessProbe"]["timeoutSeconds"] > 1.0
    # The daemon's own bound on a stop (it exits by then whatever the database does).
    assert pod["terminationGracePeriodSeconds"] > (
        max(refresh["shutdown_grace_seconds"], server["drain_seconds"])
        + daemon.TEARDOWN_SECONDS + daemon.HARD_EXIT_MARGIN_SECONDS)


def test_pod_security_matches_the_systemd_hardening() -> None:
    unit = UNIT.read_text().splitlines()
    # The unit's equivalents: no capabilities, no privilege gain, a read-only system.
    assert {"CapabilityBoundingSet=", "NoNewPrivileges=yes", "ProtectSystem=strict",
            "DynamicUser=yes"} <= set(unit)
    for kind, pod in pod_specs().items():
        assert pod["securityContext"]["runAsNonRoot"] is True, kind
        assert pod["securityContext"]["runAsUser"] != 0, kind
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        assert pod["automountServiceAccountToken"] is False, kind
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, kind
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc["capabilities"] == {"drop": ["ALL"]}, kind
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, kind
            assert sc.get("privileged") is not True, kind


def test_the_job_migrates_with_the_same_config_and_secrets() -> None:
    pods = pod_specs()
    (job,) = pods["Job"]["containers"]
    (daemon,) = pods["Deployment"]["containers"]
    assert job["command"] + job["args"] == ["tokend", "migrate"]
    assert job["image"] == daemon["image"]
    assert pods["Job"]["volumes"] == pods["Deployment"]["volumes"]
    assert mounts(job) == mounts(daemon)
    assert {k: v for k, v in env_of(job).items() if k.startswith(("TOKEND_", "CREDENTIALS"))} \
        == {k: v for k, v in env_of(daemon).items() if k.startswith(("TOKEND_", "CREDENTIALS"))}


def test_service_and_budget_select_the_daemon_pods_only() -> None:
    deployment, job = one("Deployment"), one("Job")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    selectors = [one("Service")["spec"]["selector"],
                 one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                 deployment["spec"]["selector"]["matchLabels"]]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
        assert not selector.items() <= job_labels.items()
    (port,) = one("Service")["spec"]["ports"]
    assert port["targetPort"] == deployment["spec"]["template"]["spec"]["containers"][0][
        "ports"][0]["name"]
