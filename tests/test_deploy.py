"""Deployment files, checked offline (no Docker engine or cluster runs here): the compose file
against the Compose Specification's JSON schema, the Kubernetes manifests against the
Kubernetes API schemas, and one name per setting everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import yaml
from jsonschema import Draft201909Validator

from pipeline.settings import SECRETS, WORKER_SETTINGS

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"
SETTING_NAMES = {setting.env for setting in WORKER_SETTINGS}
# CCPIPE_* names that are not worker settings: secrets from files, Grafana's provisioning
# variables, and the opt-in test of a ClickHouse server.
OTHER_NAMES = {f"{name}_FILE" for name in SECRETS} | {
    "CCPIPE_PROMETHEUS_URL", "CCPIPE_CLICKHOUSE_HOST", "CCPIPE_CLICKHOUSE_PORT",
    "CCPIPE_CLICKHOUSE_DATABASE", "CCPIPE_CLICKHOUSE_READONLY_USER", "CCPIPE_CLICKHOUSE_READONLY_PASSWORD",
    "CCPIPE_TEST_CLICKHOUSE_URL", "CCPIPE_PURE_PYTHON",  # the last: pipeline/native.py, read before any setting
}  # fmt: skip


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.schema.json").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in Draft201909Validator(schema).iter_errors(compose)]
    assert errors == []
    assert compose["services"]["ccpipe-worker"]["deploy"]["replicas"] >= 2
    assert compose["services"]["simulator"]["profiles"] == ["simulate"]
    for volume in (v for service in compose["services"].values() for v in service.get("volumes", [])):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / source).exists(), f"compose mounts {source}, which does not exist"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]
    return documents


def test_kubernetes_manifests_follow_the_api_schemas() -> None:
    kinds = set()
    for document in manifests():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        kinds.add(document["kind"])
    assert {"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "Service"} <= kinds


def test_worker_deployment_is_probed_and_stops_gracefully() -> None:
    (deployment,) = [d for d in manifests() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert container["resources"]["limits"]["memory"]


def test_one_name_per_setting_everywhere() -> None:
    configured = set()
    for document in manifests():
        if document["kind"] in ("ConfigMap", "Secret"):
            configured |= set(document.get("data", {})) | set(document.get("stringData", {}))
    assert configured == SETTING_NAMES, "the ConfigMap and Secret together set every worker setting once"
    texts = [p.read_text() for p in [
        DEPLOY / "docker-compose.yml", DEPLOY / "Dockerfile", ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"), *(ROOT / "pipeline").rglob("*.py"), *(ROOT / "grafana").rglob("*.yml"),
    ]]  # fmt: skip
    used = {name for text in texts for name in re.findall(r"\bCCPIPE_[A-Z0-9_]+\b", text)}
    assert used - SETTING_NAMES - OTHER_NAMES == set(), "unknown setting names"
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in SETTING_NAMES)
