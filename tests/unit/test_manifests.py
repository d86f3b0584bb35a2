"""sluice.manifests: each function kind renders to the resource a Nuclio/KServe user expects,
every resource passes the kubernetes/kserve models and sluice's own loader, and no secret is
written inline."""

from __future__ import annotations

import copy
import doctest
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import sluice.manifests
import sluice.manifests.build_context
import sluice.manifests.cronjob
from sluice.errors import SpecError
from sluice.manifests import RenderOptions, render_specs, validate_resource, write_bundle
from sluice.manifests.build_context import split_build_commands
from sluice.manifests.containers import JOB_COMMAND, WORKER_COMMAND
from sluice.manifests.cronjob import kubernetes_schedule
from sluice.manifests.kubectl import find_kubeconfig
from sluice.manifests.nuclio import read_back
from sluice.packaging import spec_from_path
from sluice.serving.triton_config import parse_model_config
from sluice.spec import CronTrigger, FunctionSpec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OPTIONS = RenderOptions(platform=False)


def render(*specs: FunctionSpec, options: RenderOptions = OPTIONS) -> sluice.manifests.Bundle:
    return render_specs({s.name: s for s in specs}, options)


def resource(bundle: Any, kind: str, name: str) -> dict[str, Any]:
    found = [r.document for r in bundle.resources
             if r.document["kind"] == kind and r.document["metadata"]["name"] == name]
    assert len(found) == 1, [r.filename for r in bundle.resources]
    return found[0]


def example(path: str, **options: Any) -> FunctionSpec:
    return parse_spec(spec_from_path(EXAMPLES / path, **options))


def container_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


# -- http and kafka functions: NuclioFunctions --------------------------------------------------
def test_http_function_renders_a_nuclio_function_that_reads_back_as_its_cluster_spec():
    spec = example("echo.py", name="echo", triggers=["http:port=8081"], workers=3)
    bundle = render(spec)
    nuclio = resource(bundle, "NuclioFunction", "echo")
    assert nuclio["apiVersion"] == "nuclio.io/v1beta1"
    trigger = nuclio["spec"]["triggers"]["http"]
    assert trigger["kind"] == "http" and trigger["numWorkers"] == 3
    assert "port" not in trigger.get("attributes", {})  # a local port is no NodePort
    assert nuclio["spec"]["build"]["baseImage"] == "localhost:5000/sluice/echo:latest"
    back = read_back(nuclio)
    assert back == bundle.resources[0].spec
    assert back.handler == "echo:handler" and back.source == spec.source
    assert back.http_trigger is not None and back.http_trigger.port is None


def test_gpu_and_replicas_become_nuclio_resources_and_min_max_replicas():
    spec = parse_spec({"name": "gpu-fn", "handler": "sluice.functions.etl:handler",
                       "resources": {"gpu": 2, "cpu": 1.5, "memory": "4Gi"},
                       "replicas": {"min": 2, "max": 5, "target": 0.5},
                       "triggers": {"web": {"kind": "http"}}})
    nuclio = resource(render(spec), "NuclioFunction", "gpu-fn")
    assert nuclio["spec"]["resources"]["limits"] == {"cpu": "1500m", "memory": "4Gi",
                                                     "nvidia.com/gpu": 2}
    assert (nuclio["spec"]["minReplicas"], nuclio["spec"]["maxReplicas"]) == (2, 5)
    back = read_back(nuclio)
    assert back.resources.gpu == 2 and back.replicas == spec.replicas  # target 0.5 included


def test_kafka_function_gets_the_cluster_brokers_and_its_consumer_group():
    spec = parse_spec({"name": "enrich", "handler": "sluice.functions.enrich:handler",
                       "workers": 2, "triggers": {"events": {
                           "kind": "kafka", "topics": ["transactions"], "batch": True,
                           "output": "enriched"}}})
    options = RenderOptions(platform=False, kafka_bootstrap="b1:9092,b2:9092")
    bundle = render(spec, options=options)
    trigger = resource(bundle, "NuclioFunction", "enrich")["spec"]["triggers"]["events"]
    assert trigger["kind"] == "kafka-cluster" and trigger["numWorkers"] == 2
    assert trigger["attributes"]["brokers"] == ["b1:9092", "b2:9092"]
    assert trigger["attributes"]["consumerGroup"] == "enrich"
    assert trigger["batch"] == {"mode": "enable"}
    assert any("output" in w and "Nuclio" in w for w in bundle.warnings)
    worker = json.loads(bundle.files["images/enrich/worker.json"])
    assert worker["kafka"][0]["bootstrap_servers"] == ["b1:9092", "b2:9092"]
    assert worker["http_trigger"] is None


def test_nuclio_function_that_reads_back_differently_is_refused():
    spec = example("echo.py", name="echo", triggers=["http"])
    rendered = render(spec).resources[0]
    changed = copy.deepcopy(rendered.document)
    changed["spec"]["minReplicas"] = 3
    with pytest.raises(SpecError, match=r"NuclioFunction echo: replicas\.min: reads back"):
        validate_resource(changed, rendered.spec)


# -- jobs: CronJobs (or NuclioFunctions) ----------------------------------------------------------
def test_job_with_cron_renders_a_cronjob_per_trigger_and_one_on_demand():
    spec = example("jobs/report.yaml")
    bundle = render(spec)
    nightly = resource(bundle, "CronJob", "report-nightly")
    assert nightly["spec"]["schedule"] == "0 2 * * *"
    assert nightly["spec"]["timeZone"] == "UTC"
    assert nightly["spec"]["concurrencyPolicy"] == "Forbid"
    assert "startingDeadlineSeconds" not in nightly["spec"]  # catch_up: once, no deadline
    job = nightly["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2  # retries
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["activeDeadlineSeconds"] == 600
    assert container_of(nightly)["args"] == ["/function/jobs/nightly.json"]
    on_demand = resource(bundle, "CronJob", "report")
    assert on_demand["spec"]["suspend"] is True
    assert container_of(on_demand)["args"] == ["/function/jobs/run.json"]
    runs = {path: json.loads(data) for path, data in bundle.files.items()
            if path.startswith("images/report/jobs/")}
    assert runs["images/report/jobs/nightly.json"]["params"] == {"days": 1, "pace": 0.2}
    assert runs["images/report/jobs/run.json"]["params"] == {"days": 7, "pace": 0.2}
    assert runs["images/report/jobs/nightly.json"]["trigger"] == "cron"
    dockerfile = bundle.files["images/report/Dockerfile"].decode()
    assert f"ENTRYPOINT {json.dumps(list(JOB_COMMAND))}" in dockerfile
    assert "images/report/report.py" in bundle.files  # the source ships in the context


def test_catch_up_skip_bounds_how_late_a_missed_fire_may_start():
    spec = parse_spec({"name": "etl", "kind": "job", "handler": "x:handler", "triggers": {
        "a": {"kind": "cron", "schedule": "@hourly", "catch_up": "skip"},
        "b": {"kind": "cron", "interval": "30m", "catch_up": "once", "starting_deadline": 90.5},
        "c": {"kind": "cron", "schedule": "0 * * * *", "concurrency_policy": "replace"}}})
    bundle = render(spec)
    a, b, c = (resource(bundle, "CronJob", f"etl-{t}")["spec"] for t in "abc")
    assert a["schedule"] == "0 * * * *" and a["startingDeadlineSeconds"] == 60
    assert b["schedule"] == "*/30 * * * *" and b["startingDeadlineSeconds"] == 91
    assert c["concurrencyPolicy"] == "Replace"


@pytest.mark.parametrize(("trigger", "expected"), [
    ({"schedule": "*/5 9-17 * * 1-5", "timezone": "Europe/Paris"},
     ("*/5 9-17 * * 1-5", "Europe/Paris")),
    ({"schedule": "@weekly"}, ("0 0 * * 0", "UTC")),
    ({"interval": "1m"}, ("* * * * *", "UTC")),
    ({"schedule": "@every 20m"}, ("*/20 * * * *", "UTC")),
    ({"interval": "1h"}, ("0 * * * *", "UTC")),
    ({"interval": "6h", "timezone": "Asia/Tokyo"}, ("0 */6 * * *", "UTC")),  # epoch-aligned
    ({"interval": "24h"}, ("0 0 * * *", "UTC")),
])
def test_kubernetes_schedule(trigger, expected):
    assert kubernetes_schedule(CronTrigger(**trigger)) == expected


@pytest.mark.parametrize("interval", ["30s", "7m", "90m", "5h", "48h"])
def test_intervals_a_cronjob_cannot_express_are_refused(interval):
    with pytest.raises(SpecError, match="Kubernetes CronJob"):
        kubernetes_schedule(CronTrigger(interval=interval))


def test_jobs_nuclio_mode_renders_a_job_as_a_nuclio_function_with_its_cron_trigger():
    spec = example("jobs/report.yaml")
    bundle = render(spec, options=RenderOptions(platform=False, jobs="nuclio"))
    nuclio = resource(bundle, "NuclioFunction", "report")
    assert nuclio["metadata"]["annotations"]["sluice.io/kind"] == "job"
    assert nuclio["spec"]["triggers"]["nightly"]["kind"] == "cron"
    assert not [r for r in bundle.resources if r.document["kind"] == "CronJob"]
    assert read_back(nuclio).kind == "job"


# -- serving: InferenceServices ---------------------------------------------------------------
def test_serving_function_renders_a_custom_predictor_running_the_sluice_worker():
    spec = example("serving/mlp.yaml", replicas=2)
    bundle = render(spec.with_changes(resources={"gpu": 1},
                                      triggers={"web": {"kind": "http"}}))
    isvc = resource(bundle, "InferenceService", "mlp")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    container = predictor["containers"][0]
    assert container["image"] == "localhost:5000/sluice/mlp:latest"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    worker = json.loads(bundle.files["images/mlp/worker.json"])
    assert worker["serving"]["model"] == "mlp@production"
    assert worker["artifacts"] == "s3://sluice-artifacts" and worker["gpus"] == 1
    assert (worker["host"], worker["port"], worker["http_trigger"]) == ("0.0.0.0", 8080, "web")
    dockerfile = bundle.files["images/mlp/Dockerfile"].decode()
    assert (f"ENTRYPOINT {json.dumps([*WORKER_COMMAND, '/function/worker.json'])}"
            in dockerfile)


def test_triton_serving_renders_the_triton_runtime_on_a_generated_model_repository():
    spec = example("serving/mlp.yaml", serving={"backend": "triton", "max_batch": 32})
    bundle = render(spec, options=RenderOptions(platform=False, artifacts="s3://models/x/"))
    model = resource(bundle, "InferenceService", "mlp")["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"}
    assert model["storageUri"] == "s3://models/x/triton/mlp"
    config = parse_model_config(bundle.files["triton/mlp/mlp/config.pbtxt"].decode())
    assert config.name == "mlp" and config.max_batch_size == 32
    assert [i.name for i in config.input] == ["x"] and list(config.input[0].dims) == [64]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000  # latency_ms / 10
    assert json.loads(bundle.files["triton/mlp/mlp/1/sluice.json"])["outputs"] == ["scores"]
    assert b"class TritonPythonModel" in bundle.files["triton/mlp/mlp/1/model.py"]
    assert not [p for p in bundle.files if p.startswith("images/mlp/")]  # Triton's own image


def test_triton_serving_without_a_signature_or_with_kafka_is_refused():
    spec = parse_spec({"name": "m", "kind": "serving", "serving": {"model": "m@prod",
                                                                   "backend": "triton"}})
    with pytest.raises(SpecError, match=r"^m: serving\.inputs: a Triton model repository"):
        render(spec)
    spec = example("serving/mlp.yaml", serving={"backend": "triton"}).with_changes(
        triggers={"s": {"kind": "kafka", "topics": ["t"]}})
    with pytest.raises(SpecError, match=r"^mlp: triggers\.s: KServe's Triton runtime"):
        render(spec)


# -- the platform, and secrets -----------------------------------------------------------------
def test_platform_renders_a_deployment_service_and_config_map_with_secret_references():
    bundle = render_specs({}, RenderOptions(artifacts="s3://b/p", kafka_bootstrap="k:9092"))
    kinds = sorted(r.document["kind"] for r in bundle.resources)
    # never a Secret with values
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    config = yaml.safe_load(resource(bundle, "ConfigMap", "sluice-config")["data"]["config.yaml"])
    assert config == {"kafka": {"bootstrap_servers": "k:9092"}, "artifacts": "s3://b/p"}
    pod = resource(bundle, "Deployment", "sluice-platform")["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["sluice", "up", "--no-broker"]
    assert {"secretRef": {"name": "sluice-secrets", "optional": True}} in (
        pod["containers"][0]["envFrom"])
    token = next(v for v in pod["volumes"] if v["name"] == "token")
    assert token["secret"]["secretName"] == "sluice-token"
    service = resource(bundle, "Service", "sluice-platform")
    assert service["spec"]["ports"][0]["port"] == 8070


def test_platform_state_is_on_a_claim_unless_asked_for_an_empty_dir():
    bundle = render_specs({}, RenderOptions(state_size="5Gi"))
    claim = resource(bundle, "PersistentVolumeClaim", "sluice-state")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    pod = resource(bundle, "Deployment", "sluice-platform")["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state == {"name": "state", "persistentVolumeClaim": {"claimName": "sluice-state"}}
    assert {"name": "state", "mountPath": "/var/lib/sluice"} in pod["containers"][0][
        "volumeMounts"]
    bundle = render_specs({}, RenderOptions(state_size=None))
    assert "PersistentVolumeClaim" not in {r.document["kind"] for r in bundle.resources}
    pod = resource(bundle, "Deployment", "sluice-platform")["spec"]["template"]["spec"]
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]


def test_secret_references_render_as_secret_key_refs_and_no_value_is_inlined():
    env = {"AWS_SECRET_ACCESS_KEY": "secret:s3-creds/secret-key", "LOG_LEVEL": "info"}
    http = parse_spec({"name": "api", "handler": "x:handler", "env": env,
                       "triggers": {"web": {"kind": "http"}}})
    job = parse_spec({"name": "nightly", "kind": "job", "handler": "x:handler", "env": env})
    bundle = render(http, job)
    ref = {"name": "AWS_SECRET_ACCESS_KEY",
           "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}}}
    assert ref in resource(bundle, "NuclioFunction", "api")["spec"]["env"]
    assert ref in container_of(resource(bundle, "CronJob", "nightly"))["env"]
    assert read_back(resource(bundle, "NuclioFunction", "api")).env == {
        "SLUICE_ARTIFACTS": "s3://sluice-artifacts", **env}
    for path, data in bundle.outputs().items():  # baked configs carry no env at all
        if path.endswith(".json"):
            assert json.loads(data)["env"] == {}, path
    assert "kubectl create secret generic s3-creds --from-literal=secret-key=..." in (
        bundle.files["README.md"].decode())


@pytest.mark.parametrize("spec", [
    {"env": {"DB_PASSWORD": "hunter2"}},
    {"env": {"API_TOKEN": "abc"}},
    {"env": {"AWS_ACCESS_KEY_ID": "AKIA"}},
    {"env": {"X": "secret:Bad_Name/key"}},
    {"triggers": {"k": {"kind": "kafka", "topics": ["t"], "security": {
        "security_protocol": "SASL_SSL", "sasl_plain_password": "hunter2"}}}},
])
def test_a_secret_that_would_be_written_inline_is_refused_naming_the_field(spec):
    fn = parse_spec({"name": "fn", "handler": "x:handler", **spec})
    with pytest.raises(SpecError, match=r"^fn: (env|triggers)\.") as caught:
        render(fn)
    assert "hunter2" not in str(caught.value)


# -- validation against the kubernetes and kserve models --------------------------------------
@pytest.mark.parametrize(("kind", "name", "edit", "message"), [
    ("Deployment", "sluice-platform",
     lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="x"),
     r"Deployment sluice-platform: spec\.template\.spec\.containers\[0\]\.imagePullPolicyy: "
     r"unknown field"),
    ("Service", "sluice-platform", lambda d: d["spec"]["ports"][0].update(port="8070"),
     r"Service sluice-platform: spec\.ports\[0\]\.port: must be int"),
    ("CronJob", "report-nightly", lambda d: d["spec"].pop("jobTemplate"),
     r"CronJob report-nightly: spec\.jobTemplate: required"),
    ("InferenceService", "mlp",
     lambda d: d["spec"]["predictor"].update(minReplica=1),
     r"InferenceService mlp: spec\.predictor\.minReplica: unknown field"),
    ("InferenceService", "mlp",
     lambda d: d["spec"]["predictor"]["containers"][0]["resources"]["limits"].update(cpu=2),
     r"InferenceService mlp: spec\.predictor\.containers\[0\]\.resources\.limits\.cpu: "
     r"must be str"),
])
def test_validation_names_the_resource_and_the_field(kind, name, edit, message):
    spec = example("serving/mlp.yaml").with_changes(resources={"cpu": 1})
    bundle = render(spec, example("jobs/report.yaml"), options=RenderOptions())
    document = copy.deepcopy(resource(bundle, kind, name))
    validate_resource(document)
    edit(document)
    with pytest.raises(SpecError, match=message):
        validate_resource(document)


def test_an_unknown_resource_kind_is_refused():
    with pytest.raises(SpecError, match="StatefulSet x: apiVersion .apps/v1. kind "
                                        ".StatefulSet. is not a resource"):
        validate_resource({"apiVersion": "apps/v1", "kind": "StatefulSet",
                           "metadata": {"name": "x"}})


# -- build contexts --------------------------------------------------------------------------
@pytest.mark.parametrize(("commands", "requirements", "rest"), [
    ([], [], []),
    (["pip install pandas 'numpy<3'", "pip3 install scikit-learn==1.5"],
     ["pandas", "numpy<3", "scikit-learn==1.5"], []),
    (["python -m pip install x", "apt-get install -y git", "pip install y"],
     ["x"], ["apt-get install -y git", "pip install y"]),
    (["pip install --upgrade x"], [], ["pip install --upgrade x"]),
    (["pip install a && pip install b"], [], ["pip install a && pip install b"]),
    (["pip install $PKG"], [], ["pip install $PKG"]),
])
def test_split_build_commands(commands, requirements, rest):
    assert split_build_commands(commands) == (requirements, rest)


def test_build_context_holds_requirements_commands_spec_and_source():
    spec = example("echo.py", name="echo", triggers=["http"]).with_changes(
        build={"commands": ["pip install orjson", "apt-get install -y curl"]})
    bundle = render(spec)
    files = {p[len("images/echo/"):]: d for p, d in bundle.files.items()
             if p.startswith("images/echo/")}
    assert files["requirements.txt"] == b"orjson\n"
    dockerfile = files["Dockerfile"].decode()
    assert dockerfile.index("-r /function/requirements.txt") < dockerfile.index(
        "RUN apt-get install -y curl")
    assert files["echo.py"] == (EXAMPLES / "echo.py").read_bytes()
    spec_back = parse_spec(yaml.safe_load(files["spec.yaml"]))
    assert spec_back.with_changes(source=spec.source.model_dump()) == (
        bundle.resources[0].spec)


def test_job_spec_yaml_keeps_a_timeout_equal_to_the_field_default():
    spec = parse_spec({"name": "short", "kind": "job", "handler": "x:handler", "timeout": 60})
    files = render(spec).files
    assert parse_spec(yaml.safe_load(files["images/short/spec.yaml"])).timeout == 60


# -- options, writing, kubeconfig ------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("image_registry", "Registry/"), ("tag", "a b"), ("namespace", "Prod"),
    ("artifacts", "/var/lib/artifacts"), ("kafka_bootstrap", "kafka"), ("secret", "A_B"),
    ("state_size", "lots"), ("state_size", "0Gi"),
])
def test_options_refuse_bad_values_naming_the_flag(field, value):
    with pytest.raises(SpecError, match=f"^--{field.replace('_', '-')} "):
        RenderOptions(**{field: value})


def test_namespace_is_set_on_every_resource():
    bundle = render(example("echo.py", name="echo", triggers=["http"]),
                    example("jobs/report.yaml"), example("serving/mlp.yaml"),
                    options=RenderOptions(namespace="ml"))
    assert {r.document["metadata"].get("namespace") for r in bundle.resources} == {"ml"}


def test_writer_replaces_an_earlier_render_and_refuses_other_folders(tmp_path):
    out = tmp_path / "out"
    write_bundle({"a.yaml": b"a", "images/x/Dockerfile": b"x"}, out)
    write_bundle({"a.yaml": b"a2"}, out)
    assert (out / "a.yaml").read_bytes() == b"a2"
    assert not (out / "build").exists()  # the stale file and its empty folders are gone
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(SpecError, match="did not write"):
        write_bundle({"a.yaml": b"a"}, foreign)
    with pytest.raises(SpecError, match="inside the output folder"):
        write_bundle({"../escape.yaml": b"a"}, out)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_find_kubeconfig(tmp_path):
    config = tmp_path / "kubeconfig"
    assert find_kubeconfig({}, home=tmp_path) is None
    assert find_kubeconfig({"KUBECONFIG": str(config)}, home=tmp_path) is None
    config.write_text("apiVersion: v1\n")
    missing = tmp_path / "missing"
    assert find_kubeconfig({"KUBECONFIG": f"{missing}:{config}"}, home=tmp_path) == config
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\n")
    assert find_kubeconfig({}, home=tmp_path) == tmp_path / ".kube" / "config"


@pytest.mark.parametrize("module", [sluice.manifests, sluice.manifests.cronjob,
                                    sluice.manifests.build_context])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_public_surface():
    assert sorted(sluice.manifests.__all__) == [
        "Bundle", "RenderOptions", "Resource", "render_specs", "validate_resource",
        "validate_triton_config", "write_bundle"]
    for name in sluice.manifests.__all__:
        assert getattr(sluice.manifests, name) is not None
    with pytest.raises(AttributeError, match="nope"):
        sluice.manifests.nope  # noqa: B018
