"""compose.yaml and deploy/k8s/ agree with the gateway config they run (deploy/turnout.yaml): services
present, URLs naming the right services and ports, vLLM command lines equal to `turnout vllm-args`
(served model names, speculative config, parallelism vs GPUs), Prometheus scraping the gateway,
Grafana's datasource and dashboard wired and the dashboard's turnout_* metrics really exported.
No Docker or Kubernetes here: the files are parsed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from conftest import ROOT, UvicornServer

from gateway.api import create_app
from gateway.config import DeploymentConfig, TurnoutConfig, interpolate, parse_config
from gateway.vllm_args import SERVE_PREFIX, deployment_serve_args

DEPLOY = ROOT / "deploy"
GATEWAY_CONFIG = DEPLOY / "turnout.yaml"
GPU = "nvidia.com/gpu"


def with_defaults(node: Any) -> Any:
    """`${VAR:-default}` resolved as compose does with nothing set in the environment."""
    resolved, errors = interpolate(node, {})
    assert not errors, errors
    return resolved


def load_gateway_config(environment: dict[str, str]) -> TurnoutConfig:
    return parse_config(GATEWAY_CONFIG.read_text(), str(GATEWAY_CONFIG), environment)


def vllm_deployments(config: TurnoutConfig) -> list[DeploymentConfig]:
    return [deployment for _, deployment in config.deployments() if deployment.kind == "openai"]


def vllm_args(deployment: DeploymentConfig) -> list[str]:
    """What the vllm/vllm-openai image's entrypoint (`vllm serve`) must be given."""
    argv = deployment_serve_args(deployment)
    assert tuple(argv[:2]) == SERVE_PREFIX
    return argv[2:]


def flag(args: list[str], name: str, default: str | None = None) -> str | None:
    """The value of `--name X` or `--name=X` in an argv."""
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def gpus_needed(args: list[str]) -> int:
    return int(flag(args, "--tensor-parallel-size", "1")) * int(flag(args, "--pipeline-parallel-size", "1"))


def exported_metric_names() -> set[str]:
    """Every sample name a real gateway's /metrics can carry (histograms: _bucket, _sum, _count)."""
    config = parse_config('tiers: {small: {deployments: [{kind: openai, model: m, url: "http://127.0.0.1:9/v1"}]}}\n'
                          "routing: {router: none}\n")
    with UvicornServer(create_app(config)) as server:
        text = httpx.get(server.url + "/metrics", timeout=10).text
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        names |= {name + suffix for suffix in suffixes}
    return names


# --- compose ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return with_defaults(yaml.safe_load((ROOT / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def compose_gateway_config(compose) -> TurnoutConfig:
    gateway = compose["services"]["gateway"]
    config_path = gateway["command"][gateway["command"].index("--config") + 1]
    mounts = dict(reversed(volume.split(":")[:2]) for volume in gateway["volumes"])
    assert (ROOT / mounts[config_path]).resolve() == GATEWAY_CONFIG
    return load_gateway_config({k: str(v) for k, v in (gateway.get("environment") or {}).items()})


def test_compose_services(compose):
    services = compose["services"]
    assert {"redis", "vllm-small", "vllm-large", "gateway", "prometheus", "grafana"} <= set(services)
    assert services["redis"]["image"] == "redis:8"
    assert services["gateway"]["build"] == "."


def test_compose_gateway_port_matches_its_config(compose, compose_gateway_config):
    published = [str(port).split(":") for port in compose["services"]["gateway"]["ports"]]
    assert [int(container) for *_, container in published] == [compose_gateway_config.server.port]


def test_compose_vllm_services_run_what_the_gateway_config_says(compose, compose_gateway_config):
    services = compose["services"]
    deployments = vllm_deployments(compose_gateway_config)
    assert {urlsplit(d.url).hostname for d in deployments} == {"vllm-small", "vllm-large"}
    for deployment in deployments:
        url = urlsplit(deployment.url)
        service = services[url.hostname]
        assert service["command"] == vllm_args(deployment), f"{url.hostname}: run turnout vllm-args"
        assert flag(service["command"], "--served-model-name") == deployment.model
        assert int(flag(service["command"], "--port")) == url.port
        assert f"127.0.0.1:{url.port}/health" in " ".join(service["healthcheck"]["test"])
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
        reserved = len(devices[0]["device_ids"]) if "device_ids" in devices[0] else devices[0]["count"]
        assert reserved == gpus_needed(service["command"])


def test_compose_large_tier_speculates_with_its_draft(compose, compose_gateway_config):
    (large,) = compose_gateway_config.tiers["large"].deployments
    command = compose["services"][urlsplit(large.url).hostname]["command"]
    assert json.loads(flag(command, "--speculative-config")) == {
        "method": "draft_model", "model": large.speculative.draft_model,
        "num_speculative_tokens": large.speculative.num_speculative_tokens}


def test_compose_redis_is_the_gateways_cache(compose, compose_gateway_config):
    url = urlsplit(compose_gateway_config.cache.redis_url)
    assert url.hostname in compose["services"] and url.port == 6379
    assert compose["services"]["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_gateway_and_vllm(compose, compose_gateway_config):
    prometheus = compose["services"]["prometheus"]
    assert any(v.startswith("./deploy/prometheus.yml:") for v in prometheus["volumes"])
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {job["job_name"]: {t for group in job["static_configs"] for t in group["targets"]} for job in scrape}
    assert targets["turnout"] == {f"gateway:{compose_gateway_config.server.port}"}
    assert targets["vllm"] == {urlsplit(d.url).netloc for d in vllm_deployments(compose_gateway_config)}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in scrape)


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and f"{url.port}:{url.port}" in compose["services"]["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "turnout.yaml").read_text())["providers"]
    dashboards = ROOT / mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "turnout.json").read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels and all(panel["datasource"]["uid"] == datasource["uid"] for panel in panels)
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]
    used = set(re.findall(r"\bturnout_[a-z_]+", " ".join(expressions)))
    assert used and used <= exported_metric_names(), used - exported_metric_names()


# --- Kubernetes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml")
                                                          if p.name != "kustomization.yaml")
    return [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def selected(manifests: list[dict[str, Any]], service: dict[str, Any]) -> dict[str, Any]:
    """The one workload whose pods `service` selects."""
    selector = service["spec"]["selector"].items()
    workloads = [doc for doc in manifests if doc["kind"] in ("Deployment", "StatefulSet")
                 and selector <= doc["spec"]["template"]["metadata"]["labels"].items()]
    assert len(workloads) == 1, service["metadata"]["name"]
    return workloads[0]


def service_port(service: dict[str, Any], port: int) -> int:
    """The container port that `port` of `service` forwards to."""
    (match,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    return match.get("targetPort", port)


@pytest.fixture(scope="module")
def k8s_gateway_config(manifests) -> TurnoutConfig:
    gateway = of_kind(manifests, "Deployment")["turnout-gateway"]
    args = container(gateway)["args"]
    config_path = Path(args[args.index("--config") + 1])
    (mount,) = [m for m in container(gateway)["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    text = of_kind(manifests, "ConfigMap")[volume["configMap"]["name"]]["data"][config_path.name]
    assert text == GATEWAY_CONFIG.read_text(), "deploy/k8s/configmap.yaml must carry deploy/turnout.yaml verbatim"
    return load_gateway_config({})  # secrets (VLLM_API_KEY) may be unset: their defaults apply


def test_k8s_manifests_validate_against_the_kubernetes_schema(manifests):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in manifests:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_k8s_vllm_deployments_run_what_the_gateway_config_says(manifests, k8s_gateway_config):
    services = of_kind(manifests, "Service")
    for deployment in vllm_deployments(k8s_gateway_config):
        url = urlsplit(deployment.url)
        service = services[url.hostname]
        vllm = container(selected(manifests, service))
        assert vllm["image"].startswith("vllm/vllm-openai")
        assert vllm["args"] == vllm_args(deployment), f"{url.hostname}: run turnout vllm-args"
        assert int(flag(vllm["args"], "--port")) == service_port(service, url.port)
        assert {p["containerPort"] for p in vllm["ports"]} == {service_port(service, url.port)}
        assert int(vllm["resources"]["limits"][GPU]) == gpus_needed(vllm["args"])


@pytest.mark.parametrize("tier", ["small", "large"])
def test_compose_and_k8s_run_what_vllm_args_prints(tier, compose, manifests, k8s_gateway_config, capsys,
                                                   monkeypatch):
    """The command deploy/turnout.yaml's header tells to run, `turnout vllm-args TIER --json`, prints the
    very argument list compose.yaml and deploy/k8s/ give vLLM: one generator, three places, equal."""
    from gateway.cli import main

    for name in ("VLLM_SMALL_URL", "VLLM_LARGE_URL", "VLLM_API_KEY", "TURNOUT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert main(["vllm-args", tier, "--config", str(GATEWAY_CONFIG), "--json"]) == 0
    (printed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (deployment,) = k8s_gateway_config.tiers[tier].deployments
    host = urlsplit(deployment.url).hostname
    assert compose["services"][host]["command"] == printed
    assert container(selected(manifests, of_kind(manifests, "Service")[host]))["args"] == printed


def test_k8s_gateway_redis_and_autoscaling(manifests, k8s_gateway_config):
    services = of_kind(manifests, "Service")
    gateway_workload = selected(manifests, services["turnout"])
    gateway = container(gateway_workload)
    assert {p["containerPort"] for p in gateway["ports"]} == {k8s_gateway_config.server.port}
    assert gateway["startupProbe"]["httpGet"]["path"] == "/ready"
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == gateway_workload["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # stateless replicas sharing Redis
    redis_url = urlsplit(k8s_gateway_config.cache.redis_url)
    redis = selected(manifests, services[redis_url.hostname])
    assert redis["kind"] == "StatefulSet" and container(redis)["image"] == "redis:8"
    assert service_port(services[redis_url.hostname], redis_url.port) == 6379
