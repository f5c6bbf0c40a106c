"""The Kubernetes manifests in k8s/, checked without a cluster or the network.

- Every object validates against a schema: KubeRay's RayCluster and RayJob against their CRD schemas
  (vendored in k8s/crds/); Services, PersistentVolumeClaims and the pod templates of Deployments and
  StatefulSets against the core Kubernetes schemas that the RayCluster CRD embeds (its head Service,
  its pod templates, an ephemeral volume's claim template). Validation is strict, as `kubectl apply`
  (`--validate=strict`, the default) is: an unknown field is an error.
- Every RayJob's entrypoint is an actionlab command line that parses, and its experiment loads with its
  --set overrides; its paths, tracking URI and worker resources agree with the other manifests. The
  MLflow Deployment's `actionlab server` command parses too.
- Names agree across files: volumes, Services' selectors, the Secret and ConfigMap that README creates,
  the GPU group's custom resource and cluster.yaml's.
"""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).parents[1]
K8S = ROOT / "k8s"
SHARED_MOUNT = "/mnt/shared"  # where every pod mounts the PVC actionlab-shared (k8s/storage.yaml)


# -- schemas -------------------------------------------------------------------------------------

def strict(schema: dict) -> dict:
    """A Kubernetes structural (OpenAPI v3) schema as JSON Schema, closed like kubectl's strict validation.

    An object schema with `properties` and neither `additionalProperties` nor
    `x-kubernetes-preserve-unknown-fields` rejects other keys (the API server would report them as
    unknown fields); `nullable: true` admits null. Other `x-kubernetes-*` keys (list types, CEL rules)
    are left in place: JSON Schema ignores keywords it does not know.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) if key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not") else value
           for key, value in schema.items()}
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_schema(plural: str) -> dict:
    """(apiVersion, kind, schema) of a vendored CRD, e.g. 'rayclusters'."""
    doc = json.loads((K8S / "crds" / f"ray.io_{plural}.v1.json").read_text())
    return doc["apiVersion"], doc["kind"], strict(doc["openAPIV3Schema"])


def object_schema(spec: dict) -> dict:
    """A top-level object: apiVersion, kind, metadata.name and `spec`."""
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"type": "object", "required": ["name"]}, "spec": spec}}


def workload_schema(pod_template: dict, **extra_spec) -> dict:
    """apps/v1 Deployment or StatefulSet: the fields used here, the pod template in full."""
    label_map = {"type": "object", "additionalProperties": {"type": "string"}}
    spec = {"type": "object", "required": ["selector", "template"], "additionalProperties": False,
            "properties": {"replicas": {"type": "integer", "minimum": 0},
                           "selector": {"type": "object", "required": ["matchLabels"], "additionalProperties": False,
                                        "properties": {"matchLabels": label_map}},
                           "template": pod_template, **extra_spec}}
    return object_schema(spec)


def build_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema, for every kind the manifests may use."""
    schemas = {}
    for plural in ("rayclusters", "rayjobs"):
        api_version, kind, schema = crd_schema(plural)
        schemas[api_version, kind] = schema
    head = schemas["ray.io/v1", "RayCluster"]["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]
    pod_template = head["template"]  # core/v1 PodTemplateSpec
    service = copy.deepcopy(head["headService"])  # core/v1 Service
    service["required"] = ["apiVersion", "kind", "metadata", "spec"]
    claim_template = (pod_template["properties"]["spec"]["properties"]["volumes"]["items"]["properties"]
                      ["ephemeral"]["properties"]["volumeClaimTemplate"])  # metadata + PersistentVolumeClaimSpec
    schemas["v1", "Service"] = service
    schemas["v1", "PersistentVolumeClaim"] = object_schema(claim_template["properties"]["spec"])
    schemas["apps/v1", "Deployment"] = workload_schema(
        pod_template,
        strategy={"type": "object", "properties": {"type": {"enum": ["Recreate", "RollingUpdate"]}}})
    schemas["apps/v1", "StatefulSet"] = workload_schema(
        pod_template, serviceName={"type": "string"},
        volumeClaimTemplates={"type": "array", "items": claim_template})
    schemas["apps/v1", "StatefulSet"]["properties"]["spec"]["required"].append("serviceName")
    return schemas


SCHEMAS = build_schemas()


def problems(doc: dict) -> list[str]:
    """Every schema violation of one object, as `path: message`."""
    schema = SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return [f"no schema for apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r}"]
    validator = jsonschema.Draft4Validator(schema)
    return sorted(f"{'.'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
                  for err in validator.iter_errors(doc))


# -- the manifests -------------------------------------------------------------------------------

def load_manifests() -> dict[str, dict]:
    """'file.yaml#Kind/name' -> object, for every document of every k8s/*.yaml."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[f"{path.name}#{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"] = doc
    return objects


MANIFESTS = load_manifests()


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in MANIFESTS.values() if doc["kind"] == kind]


def pod_templates() -> list[dict]:
    """The pod templates of every workload and Ray group."""
    found = [doc["spec"]["template"] for doc in MANIFESTS.values() if doc["kind"] in ("Deployment", "StatefulSet")]
    for cluster in of_kind("RayCluster"):
        found.append(cluster["spec"]["headGroupSpec"]["template"])
        found += [group["template"] for group in cluster["spec"].get("workerGroupSpecs", [])]
    return found


def ray_custom_resources(ray_start_params: dict) -> dict:
    """rayStartParams' `resources`: KubeRay passes it to a shell, so it is JSON inside double quotes."""
    value = ray_start_params.get("resources")
    if value is None:
        return {}
    assert value.startswith('"') and value.endswith('"'), f"resources {value!r}: write '\"{{...}}\"' (KubeRay quoting)"
    return json.loads(value[1:-1].replace('\\"', '"'))


def test_manifests_found():
    kinds = sorted(doc["kind"] for doc in MANIFESTS.values())
    assert {"RayCluster", "RayJob", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim"} <= set(kinds)


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_manifest_validates(name):
    assert problems(MANIFESTS[name]) == []
    assert MANIFESTS[name]["metadata"].get("name"), "every object needs metadata.name"


@pytest.mark.parametrize("kind, edit, expected", [
    ("RayCluster", lambda c: c["spec"]["workerGroupSpecs"][0].update(replica=1), "'replica' was unexpected"),
    ("RayCluster", lambda c: c["spec"]["workerGroupSpecs"][0]["rayStartParams"].update({"num-cpus": 0}),
     "is not of type 'string'"),
    ("RayCluster", lambda c: c["spec"]["workerGroupSpecs"][0].pop("groupName"), "'groupName' is a required property"),
    ("RayJob", lambda j: j["spec"].update(entrypoint=["actionlab", "sweep"]), "is not of type 'string'"),
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imag="x"), "'imag' was unexpected"),
    ("Service", lambda s: s["spec"].update(selectr={}), "'selectr' was unexpected"),
    ("StatefulSet", lambda s: s["spec"]["volumeClaimTemplates"][0]["spec"].update(accessMode=["ReadWriteOnce"]),
     "'accessMode' was unexpected"),
], ids=["unknown-field", "wrong-type", "missing-required", "rayjob-type", "pod-template-typo", "service-typo",
        "claim-template-typo"])
def test_validation_rejects_mistakes(kind, edit, expected):
    """The validation is not vacuous: mistakes that `kubectl apply` would refuse are found."""
    doc = copy.deepcopy(of_kind(kind)[0])
    edit(doc)
    assert any(expected in problem for problem in problems(doc)), problems(doc)


# -- RayJobs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("job", of_kind("RayJob"), ids=lambda job: job["metadata"]["name"])
def test_job_entrypoint_parses_and_loads(job, monkeypatch):
    from orchestrator.cli import build_parser
    from orchestrator.commands._common import load_config

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "actionlab"
    args = build_parser().parse_args(argv[1:])
    assert args.command in ("sweep", "ablate")
    assert args.address == "auto"  # the driver runs on the head pod

    monkeypatch.chdir(ROOT)  # the job's working_dir is the repository
    cfg = load_config(args)
    assert str(cfg.scaling.storage_path).startswith(SHARED_MOUNT + "/")
    assert str(cfg.data.root).startswith(SHARED_MOUNT + "/") and str(cfg.data.annotations).startswith(SHARED_MOUNT + "/")
    (mlflow,) = [svc for svc in of_kind("Service") if svc["metadata"]["name"] == "mlflow"]
    assert cfg.tracking.tracking_uri == f"http://mlflow:{mlflow['spec']['ports'][0]['port']}"

    (cluster,) = of_kind("RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    offered = {}
    for group in cluster["spec"]["workerGroupSpecs"]:
        offered.update(ray_custom_resources(group["rayStartParams"]))
    assert set(cfg.scaling.worker_resources) <= set(offered), "training asks for a resource no pod offers"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(runtime_env) == {"working_dir"}


def test_mlflow_server_command_parses():
    """The Deployment runs `actionlab server` with options the CLI takes, on the Service's port, over the
    PostgreSQL Service, with the artifacts on the shared volume."""
    from orchestrator.cli import build_parser

    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert "exec actionlab server " in script
    argv = shlex.split(script.split("exec ", 1)[1])
    args = build_parser().parse_args(argv[1:])
    assert args.command == "server" and args.host == "0.0.0.0"
    (service,) = [svc for svc in of_kind("Service") if svc["metadata"]["name"] == "mlflow"]
    assert service["spec"]["ports"][0]["targetPort"] == args.port
    (postgres,) = [svc for svc in of_kind("Service") if svc["metadata"]["name"] == "postgres"]
    assert f"@postgres:{postgres['spec']['ports'][0]['port']}/" in args.backend_store_uri
    assert ":" not in args.backend_store_uri.split("://", 1)[1].split("@")[0], "the password belongs in PGPASSWORD"
    assert args.artifact_root.startswith(SHARED_MOUNT + "/")


# -- names that must agree ------------------------------------------------------------------------

def test_gpu_group_matches_cluster_yaml():
    """The GPU pods offer what cluster.yaml's GPU nodes offer, so the same --set works on both."""
    aws = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    (cluster,) = of_kind("RayCluster")
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert ray_custom_resources(group["rayStartParams"]) == aws["available_node_types"]["gpu_worker"]["resources"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    for spec in (head, container):  # the image's Ray is the one the operator is told about
        assert spec["image"].split(":")[1].startswith(cluster["spec"]["rayVersion"] + "-")


def test_volumes_and_services_resolve():
    claims = {doc["metadata"]["name"] for doc in of_kind("PersistentVolumeClaim")}
    for template in pod_templates():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
                if claim is not None:
                    assert claim in claims, f"{container['name']}: no PersistentVolumeClaim {claim}"
                    assert mount["mountPath"] == SHARED_MOUNT
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= template.get("metadata", {}).get("labels", {}).items()
                   for template in pod_templates()), f"Service {service['metadata']['name']} selects no pod"
    for workload in of_kind("Deployment") + of_kind("StatefulSet"):
        assert workload["spec"]["selector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_secrets_and_config_maps_are_created_in_readme():
    """The Secret and ConfigMap the pods read are not manifests (no password in git): README creates them."""
    readme = (ROOT / "README.md").read_text()
    refs = set()
    for template in pod_templates():
        for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            for env in container.get("env", []):
                for kind, ref in env.get("valueFrom", {}).items():
                    refs.add((kind, ref["name"], ref["key"]))
    assert refs, "the pods read no Secret or ConfigMap"
    for kind, name, key in sorted(refs):
        create = {"secretKeyRef": f"kubectl create secret generic {name}",
                  "configMapKeyRef": f"kubectl create configmap {name}"}[kind]
        assert f"{create} --from-literal={key}=" in readme, f"README.md: `{create} --from-literal={key}=...`"
