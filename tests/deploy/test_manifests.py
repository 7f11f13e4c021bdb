"""deploy/: the Kubernetes manifests against the API schemas, offline, and what they must say.

Every object validates against the schemas of one Kubernetes release in strict mode (no
unknown fields: a misspelled key fails). Then the facts the schemas cannot know: probes on
the HTTP port and the paths the server answers, memory sized from the configured cache,
a grace period longer than the drain, every file the configuration names mounted, the
advertise lists, and compose.yaml's fleet of three.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cogflight_core import Config
from tests.support.deploy import (
    BATCHES_PER_STREAM,
    DEPLOY,
    KUBERNETES,
    OVERHEAD_BYTES,
    REPO,
    SHUTDOWN_S,
    compose,
    configmap_file,
    container,
    container_env,
    find,
    image,
    manifests,
    one,
    quantity,
    workloads,
    yaml_documents,
)

# A release kubernetes-validate ships schemas for (1.25 to 1.37 in 1.37.0), widely run.
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "cogflight"


def _id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(KUBERNETES)}:{doc['kind']}"


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "cogflight.toml"
    path.write_text(text)
    return Config.from_file(path)


def _advertised(env: dict[str, str]) -> tuple[str, ...]:
    """The advertise list the variables give (the file they point to is read elsewhere)."""
    return Config.from_env(
        {k: v for k, v in env.items() if k != "COGFLIGHT_CONFIG"}
    ).server.advertise


def _workload_id(w: dict[str, Any]) -> str:
    return str(w["kind"])


@pytest.mark.parametrize("item", manifests(), ids=_id)
def test_manifest_validates_against_the_kubernetes_schema(item: tuple[Path, dict]) -> None:
    _, doc = item
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE


def test_validation_is_strict() -> None:
    deployment = one("Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_kinds_present() -> None:
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"


@pytest.mark.parametrize("folder", ["base", "deployment", "statefulset"])
def test_each_kustomization_lists_its_folder(folder: str) -> None:
    directory = KUBERNETES / folder
    (doc,) = yaml_documents(directory / "kustomization.yaml")
    listed = doc["resources"]
    for entry in listed:
        assert (directory / entry).exists(), f"{folder}/kustomization.yaml: {entry} is missing"
    files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert files <= set(listed), f"{folder}: not in its kustomization: {files - set(listed)}"
    if folder != "base":
        assert "../base" in listed


def test_the_image_and_the_workloads_agree_on_ports() -> None:
    img = image()
    flight_port = int(img.env["COGFLIGHT_PORT"])
    http_port = int(img.env["COGFLIGHT_HTTP_PORT"])
    assert sorted(img.expose) == sorted([flight_port, http_port])
    for w in workloads():
        c = container(w)
        env = {**img.env, **container_env(c)}
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {
            "grpc": int(env["COGFLIGHT_PORT"]),
            "http": int(env["COGFLIGHT_HTTP_PORT"]),
        }
    for service in find("Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ("grpc", "http")


@pytest.mark.parametrize("workload", workloads(), ids=_workload_id)
def test_probes_hit_the_http_port(workload: dict[str, Any]) -> None:
    c = container(workload)
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    http = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        str(http),
        "/metrics",
    )


@pytest.mark.parametrize("workload", workloads(), ids=_workload_id)
def test_resources_are_sized_from_the_cache_budget(
    workload: dict[str, Any], tmp_path: Path
) -> None:
    cfg = _config(tmp_path, configmap_file())
    resources = container(workload)["resources"]
    memory = quantity(resources["requests"]["memory"])
    workers = cfg.server.workers
    assert memory > workers * cfg.engine.cache_bytes
    need = workers * (
        cfg.engine.cache_bytes
        + OVERHEAD_BYTES
        + cfg.server.max_streams * BATCHES_PER_STREAM * cfg.engine.max_batch_bytes
    )
    assert memory >= need, f"memory request {memory / 2**20:.0f} MiB < {need / 2**20:.0f} MiB"
    assert quantity(resources["limits"]["memory"]) >= memory
    cpu = quantity(resources["requests"]["cpu"])
    assert cfg.engine.decode_threads * workers <= quantity(resources["limits"]["cpu"])
    assert cpu >= workers


@pytest.mark.parametrize("workload", workloads(), ids=_workload_id)
def test_grace_period_outlasts_the_drain(workload: dict[str, Any], tmp_path: Path) -> None:
    cfg = _config(tmp_path, configmap_file())
    pod = workload["spec"]["template"]["spec"]
    command = container(workload)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + cfg.server.drain_s + SHUTDOWN_S


@pytest.mark.parametrize("workload", workloads(), ids=_workload_id)
def test_runs_as_the_image_user_on_a_read_only_root(workload: dict[str, Any]) -> None:
    img = image()
    uid, _, gid = img.user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a number, not root"
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    sc = container(workload)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def _mounts(workload: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (mount, its volume or claim template)."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "claim": claim}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container(workload)["volumeMounts"]}


def _key_of(workload: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    for mount_path, (mount, volume) in _mounts(workload).items():
        if path.startswith(mount_path.rstrip("/") + "/"):
            return mount, volume, path[len(mount_path.rstrip("/")) + 1 :]
    raise AssertionError(f"{path} is on the read-only root filesystem: mount a volume there")


@pytest.mark.parametrize("workload", workloads(), ids=_workload_id)
def test_every_file_the_configuration_names_is_mounted(
    workload: dict[str, Any], tmp_path: Path
) -> None:
    env = {**image().env, **container_env(container(workload))}
    _, volume, key = _key_of(workload, env["COGFLIGHT_CONFIG"])
    assert volume["configMap"]["name"] == "cogflight-config" and key == "cogflight.toml"
    cfg = _config(tmp_path, configmap_file())
    for setting in ("token_file", "tls_cert", "tls_key"):
        path = getattr(cfg.server, setting)
        assert path, f"{setting}: the manifests enable tokens and TLS"
        _, volume, key = _key_of(workload, path)
        secret = one("Secret", volume["secret"]["secretName"])
        assert key in secret["stringData"], f"{setting}: no key {key} in {secret['metadata']}"
    usage = env["COGFLIGHT_USAGE_LOG"]
    mount, volume, _ = _key_of(workload, usage)
    assert not mount.get("readOnly") and ("emptyDir" in volume or "claim" in volume)
    mount, volume, _ = _key_of(workload, "/tmp/x")
    assert "emptyDir" in volume


def test_placeholder_tokens_are_refused(tmp_path: Path) -> None:
    from flight_server._auth import load_tokens

    path = tmp_path / "tokens"
    path.write_text(one("Secret", "cogflight-tokens")["stringData"]["tokens"])
    with pytest.raises(ValueError, match="at least 16 characters"):
        load_tokens(path)


def test_the_deployment_advertises_its_service(tmp_path: Path) -> None:
    cfg = _config(tmp_path, configmap_file())
    scheme = "grpc+tls" if cfg.server.tls_cert else "grpc"
    env = container_env(container(one("Deployment")))
    service = one("Service", "cogflight")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    address = f"{scheme}://cogflight.{NAMESPACE}.svc.cluster.local:{port}"
    assert _advertised(env) == (address,)


def test_the_statefulset_advertises_every_pod(tmp_path: Path) -> None:
    cfg = _config(tmp_path, configmap_file())
    scheme = "grpc+tls" if cfg.server.tls_cert else "grpc"
    sts = one("StatefulSet")
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
    name, service = sts["metadata"]["name"], headless["metadata"]["name"]
    expected = tuple(
        f"{scheme}://{name}-{i}.{service}.{NAMESPACE}.svc.cluster.local:{port}"
        for i in range(sts["spec"]["replicas"])
    )
    env = container_env(container(sts))
    assert _advertised(env) == expected
    assert not [
        h
        for h in find("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    ], "the advertise list names every pod: no HPA on the StatefulSet"


def test_the_two_workloads_run_the_same_pod() -> None:
    def pod(w: dict[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(w["spec"]["template"])
        c = container({"spec": {"template": spec}})
        c["env"] = [v for v in c["env"] if v["name"] != "COGFLIGHT_ADVERTISE"]
        spec["spec"]["volumes"] = [v for v in spec["spec"]["volumes"] if v["name"] != "usage"]
        return spec

    deployment, sts = one("Deployment"), one("StatefulSet")
    assert pod(deployment) == pod(sts)
    assert deployment["spec"]["selector"] == sts["spec"]["selector"]


def test_hpa_and_pdb_select_the_pods() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    for service in find("Service"):
        assert service["spec"]["selector"].items() <= labels.items()


def test_image_default_configuration_loads() -> None:
    cfg = Config.from_file(DEPLOY / "cogflight.toml")
    assert cfg.server.drain_s > 0
    img = image()
    assert ("deploy/cogflight.toml", img.env["COGFLIGHT_CONFIG"]) in img.copies


def test_the_image_copies_every_package() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    tops = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    copied = {src.rstrip("/") for src, _ in image().copies}
    assert tops <= copied, f"deploy/Dockerfile does not COPY {sorted(tops - copied)}"
    kept = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for src in copied:
        assert (REPO / src).exists(), src
        assert any(src == k or src.startswith(k + "/") for k in kept), (
            f".dockerignore leaves {src} out of the build context"
        )


def test_image_base_and_entrypoint() -> None:
    img = image()
    assert img.base.startswith("python:3.11-slim")
    assert img.entrypoint == ["cogflight", "serve"]
    assert img.healthcheck[:2] == ["python", "-c"] and "/healthz" in img.healthcheck[2]


# compose.yaml --------------------------------------------------------------------------

REPLICAS = ("cogflight-1", "cogflight-2", "cogflight-3")


def test_compose_is_a_fleet_of_three(tmp_path: Path) -> None:
    doc = compose()
    services = doc["services"]
    serving = [
        name
        for name, s in services.items()
        if s.get("image") == services[REPLICAS[0]]["image"] and "entrypoint" not in s
    ]
    assert sorted(serving) == list(REPLICAS)
    env = {name: services[name]["environment"] for name in REPLICAS}
    advertised = {name: _advertised(e) for name, e in env.items()}
    lists = set(advertised.values())
    assert len(lists) == 1, "every replica advertises the same locations, in the same order"
    (locations,) = lists
    assert len(locations) == 3
    published = []
    for name in REPLICAS:
        flight = [p for p in services[name]["ports"] if p.endswith(":8815")]
        (mapping,) = flight
        published.append(int(mapping.split(":")[0]))
    assert [int(loc.rsplit(":", 1)[1]) for loc in locations] == published
    # One shared configuration, which loads, and time to drain on `docker compose stop`.
    (config_file,) = {services[n]["configs"][0]["source"] for n in REPLICAS}
    source = DEPLOY / doc["configs"][config_file]["file"]
    cfg = Config.from_file(source)
    grace = services[REPLICAS[0]]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > cfg.server.drain_s + SHUTDOWN_S
    assert "s3://" in " ".join(services[REPLICAS[0]]["command"])
    store = [n for n, s in services.items() if "minio" in str(s.get("image", ""))]
    assert store, "an S3-compatible store"


def test_compose_parses_as_plain_yaml() -> None:
    assert yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
