"""The Kubernetes manifests in k8s/, checked without a cluster or the network.

- Every object validates against a schema: KubeRay's RayCluster and RayJob against their CRD schemas
  (vendored in k8s/crds/); Services, PersistentVolumeClaims, NetworkPolicies and the pod templates of
  Deployments and StatefulSets against the core Kubernetes schemas that the RayCluster CRD embeds (its
  head Service, its pod templates, an ephemeral volume's claim template, its networkPolicy rules).
  Validation is strict, as `kubectl apply` (`--validate=strict`, the default) is: an unknown field is
  an error. k8s/render.sh's output (the images' digests filled in) validates too.
- Every RayJob's entrypoint is an actionlab command line that parses, and its experiment loads with its
  --set overrides; its paths, tracking URI and worker resources agree with the other manifests. The
  MLflow Deployment's `actionlab server` command parses too.
- Nothing answers without credentials: Ray with token authentication (authOptions), MLflow with its
  basic-auth app (settings read by the installed mlflow's own parser), PostgreSQL with scram-sha-256
  passwords; NetworkPolicies admit only the pods that need each port (evaluated on the pods' labels).
- Every container runs as a non-root uid without privileges, from an image pinned by digest, and
  installs from k8s/requirements.lock with every file's hash checked (k8s/install.sh, run with a fake pip).
- Names agree across files: volumes, Services' selectors, the Secrets and ConfigMaps that README creates,
  the GPU group's custom resource and cluster.yaml's.
- Elastic training: the GPU group's bounds fit the experiment section the comments show (and cluster.yaml's
  GPU nodes), as does each RayJob's elastic --set example (loaded with its entrypoint); the autoscaler is on,
  and a pod's SIGTERM becomes a Ray drain that ends inside its grace period.
"""
from __future__ import annotations

import configparser
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).parents[1]
K8S = ROOT / "k8s"
SHARED_MOUNT = "/mnt/shared"  # where every pod mounts the PVC actionlab-shared (k8s/storage.yaml)
LOCK = K8S / "requirements.lock"
INSTALL = K8S / "install.sh"
RENDER = K8S / "render.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="k8s/render.sh and k8s/install.sh are bash")
DIGEST_PLACEHOLDERS = {"rayproject/ray": "RAY_IMAGE_DIGEST", "postgres": "POSTGRES_IMAGE_DIGEST"}


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


def network_policy_schema(rules: dict) -> dict:
    """networking/v1 NetworkPolicy, from the rules KubeRay's networkPolicy embeds (NetworkPolicyIngressRule,
    NetworkPolicyEgressRule, and the LabelSelector of their peers)."""
    ingress_rule = rules["ingressRules"]["items"]
    label_selector = ingress_rule["properties"]["from"]["items"]["properties"]["podSelector"]
    spec = {"type": "object", "required": ["podSelector"], "additionalProperties": False,
            "properties": {"podSelector": label_selector,
                           "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                           "ingress": {"type": "array", "items": ingress_rule},
                           "egress": {"type": "array", "items": rules["egressRules"]["items"]}}}
    return object_schema(spec)


CONFIG_MAP_SCHEMA = {  # core/v1 ConfigMap (the CRDs embed none)
    "type": "object", "required": ["apiVersion", "kind", "metadata"], "additionalProperties": False,
    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                   "metadata": {"type": "object", "required": ["name"]},
                   "data": {"type": "object", "additionalProperties": {"type": "string"}},
                   "immutable": {"type": "boolean"}}}


def build_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema, for every kind the manifests may use."""
    schemas = {}
    for plural in ("rayclusters", "rayjobs"):
        api_version, kind, schema = crd_schema(plural)
        schemas[api_version, kind] = schema
    cluster_spec = schemas["ray.io/v1", "RayCluster"]["properties"]["spec"]["properties"]
    head = cluster_spec["headGroupSpec"]["properties"]
    pod_template = head["template"]  # core/v1 PodTemplateSpec
    service = copy.deepcopy(head["headService"])  # core/v1 Service
    service["required"] = ["apiVersion", "kind", "metadata", "spec"]
    claim_template = (pod_template["properties"]["spec"]["properties"]["volumes"]["items"]["properties"]
                      ["ephemeral"]["properties"]["volumeClaimTemplate"])  # metadata + PersistentVolumeClaimSpec
    schemas["v1", "Service"] = service
    schemas["v1", "PersistentVolumeClaim"] = object_schema(claim_template["properties"]["spec"])
    schemas["v1", "ConfigMap"] = CONFIG_MAP_SCHEMA
    schemas["networking.k8s.io/v1", "NetworkPolicy"] = network_policy_schema(
        cluster_spec["networkPolicy"]["properties"]["head"]["properties"])
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


def named(kind: str, name: str) -> dict:
    (doc,) = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    return doc


def pods() -> dict[str, tuple[dict, dict]]:
    """'what' -> (labels, pod template), for every pod the manifests make: workloads, the Ray head and
    groups, the RayJobs' submitters. The labels are those the pods will carry: the template's, and
    for the pods KubeRay makes, the ones it adds (NetworkPolicies select by them)."""
    found = {}
    for doc in of_kind("Deployment") + of_kind("StatefulSet"):
        template = doc["spec"]["template"]
        found[f"{doc['kind']}/{doc['metadata']['name']}"] = (template["metadata"]["labels"], template)
    for cluster in of_kind("RayCluster"):
        name = cluster["metadata"]["name"]
        head = cluster["spec"]["headGroupSpec"]["template"]
        found[f"RayCluster/{name}/head"] = (
            {**head.get("metadata", {}).get("labels", {}),
             "ray.io/cluster": name, "ray.io/node-type": "head", "ray.io/group": "headgroup"}, head)
        for group in cluster["spec"].get("workerGroupSpecs", []):
            found[f"RayCluster/{name}/{group['groupName']}"] = (
                {**group["template"].get("metadata", {}).get("labels", {}),
                 "ray.io/cluster": name, "ray.io/node-type": "worker", "ray.io/group": group["groupName"]},
                group["template"])
    for job in of_kind("RayJob"):
        template = job["spec"].get("submitterPodTemplate")
        if template is not None:
            found[f"RayJob/{job['metadata']['name']}/submitter"] = (
                {**template.get("metadata", {}).get("labels", {}), "ray.io/originated-from-crd": "RayJob",
                 "ray.io/originated-from-cr-name": job["metadata"]["name"],
                 "app.kubernetes.io/created-by": "kuberay-operator"}, template)
    return found


def pod_templates() -> list[dict]:
    """The pod templates of every workload, Ray group and RayJob submitter."""
    return [template for _, template in pods().values()]


def containers(template: dict) -> list[dict]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def env_of(container: dict) -> dict[str, dict]:
    """name -> the env entry (`value` or `valueFrom`)."""
    return {env["name"]: env for env in container.get("env", [])}


def ray_custom_resources(ray_start_params: dict) -> dict:
    """rayStartParams' `resources`: KubeRay passes it to a shell, so it is JSON inside double quotes."""
    value = ray_start_params.get("resources")
    if value is None:
        return {}
    assert value.startswith('"') and value.endswith('"'), f"resources {value!r}: write '\"{{...}}\"' (KubeRay quoting)"
    return json.loads(value[1:-1].replace('\\"', '"'))


def readme_creates() -> dict[tuple[str, str], set[str]]:
    """('secret' | 'configmap', name) -> the keys README.md's `kubectl create ...` commands give it:
    `--from-literal=KEY=...`, `--from-file=PATH` (key: the file's name) or `--from-file=KEY=PATH`. A file
    named must exist in the repository."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    created = {}
    for match in re.finditer(r"kubectl create (secret generic|configmap) (\S+)([^\n]*)", text):
        kind = "secret" if match[1] == "secret generic" else "configmap"
        keys = set(re.findall(r"--from-literal=([\w.-]+)=", match[3]))
        for spec in re.findall(r"--from-file=(\S+)", match[3]):
            key, _, path = spec.rpartition("=")
            assert (ROOT / path).is_file(), f"README.md: --from-file={spec}: no file {path}"
            keys.add(key or Path(path).name)
        created.setdefault((kind, match[2]), set()).update(keys)
    return created


def test_manifests_found():
    kinds = sorted(doc["kind"] for doc in MANIFESTS.values())
    assert {"RayCluster", "RayJob", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim",
            "NetworkPolicy", "ConfigMap"} <= set(kinds)


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_manifest_validates(name):
    assert problems(MANIFESTS[name]) == []
    assert MANIFESTS[name]["metadata"].get("name"), "every object needs metadata.name"


@pytest.mark.parametrize("kind, edit, expected", [
    ("RayCluster", lambda c: c["spec"]["workerGroupSpecs"][0].update(replica=1), "'replica' was unexpected"),
    ("RayCluster", lambda c: c["spec"]["workerGroupSpecs"][0]["rayStartParams"].update({"num-cpus": 0}),
     "is not of type 'string'"),
    ("RayCluster", lambda c: c["spec"]["workerGroupSpecs"][0].pop("groupName"), "'groupName' is a required property"),
    ("RayCluster", lambda c: c["spec"]["authOptions"].update(mode="tokens"), "is not one of ['disabled', 'token']"),
    ("RayJob", lambda j: j["spec"].update(entrypoint=["actionlab", "sweep"]), "is not of type 'string'"),
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imag="x"), "'imag' was unexpected"),
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsUser="1000"),
     "is not of type 'integer'"),
    ("Service", lambda s: s["spec"].update(selectr={}), "'selectr' was unexpected"),
    ("StatefulSet", lambda s: s["spec"]["volumeClaimTemplates"][0]["spec"].update(accessMode=["ReadWriteOnce"]),
     "'accessMode' was unexpected"),
    ("NetworkPolicy", lambda n: n["spec"]["ingress"][0].update(form=[]), "'form' was unexpected"),
    ("NetworkPolicy", lambda n: n["spec"].update(policyTypes=["ingress"]), "is not one of ['Ingress', 'Egress']"),
    ("ConfigMap", lambda c: c["data"].update(port=5000), "is not of type 'string'"),
], ids=["unknown-field", "wrong-type", "missing-required", "auth-mode", "rayjob-type", "pod-template-typo",
        "security-context-type", "service-typo", "claim-template-typo", "network-policy-typo",
        "network-policy-type", "config-map-value"])
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
    mlflow = named("Service", "mlflow")
    assert cfg.tracking.tracking_uri == f"http://mlflow:{mlflow['spec']['ports'][0]['port']}"

    (cluster,) = of_kind("RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    offered = {}
    for group in cluster["spec"]["workerGroupSpecs"]:
        offered.update(ray_custom_resources(group["rayStartParams"]))
    assert set(cfg.scaling.worker_resources) <= set(offered), "training asks for a resource no pod offers"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(runtime_env) == {"working_dir"}


def mlflow_server_args():
    """The MLflow Deployment's `actionlab server` command line, parsed by actionlab's own parser."""
    from orchestrator.cli import build_parser

    (container,) = named("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert "exec actionlab server " in script
    argv = shlex.split(script.split("exec ", 1)[1])
    return build_parser().parse_args(argv[1:])


def test_mlflow_server_command_parses():
    """The Deployment runs `actionlab server` with options the CLI takes, on the Service's port, over the
    PostgreSQL Service, with the artifacts on the shared volume."""
    args = mlflow_server_args()
    assert args.command == "server" and args.host == "0.0.0.0"
    service = named("Service", "mlflow")
    assert service["spec"]["ports"][0]["targetPort"] == args.port
    postgres = named("Service", "postgres")
    assert f"@postgres:{postgres['spec']['ports'][0]['port']}/" in args.backend_store_uri
    assert ":" not in args.backend_store_uri.split("://", 1)[1].split("@")[0], "the password belongs in PGPASSWORD"
    assert args.artifact_root.startswith(SHARED_MOUNT + "/")


# -- nothing answers without credentials ----------------------------------------------------------

def test_ray_requires_its_token():
    """Token authentication on the RayCluster (KubeRay gives every Ray container, the autoscaler and the
    RayJobs' submitters RAY_AUTH_MODE=token and the token), from a Secret README creates with the key
    KubeRay reads; no container turns it off."""
    (cluster,) = of_kind("RayCluster")
    auth = cluster["spec"].get("authOptions", {})
    assert auth.get("mode") == "token", "spec.authOptions.mode: token"
    assert not auth.get("enableK8sTokenAuth"), "Kubernetes-delegated auth does not cover RayJobs"
    assert "auth_token" in readme_creates().get(("secret", auth.get("secretName")), set()), \
        f"README.md: kubectl create secret generic {auth.get('secretName')} --from-literal=auth_token=..."
    for what, (_, template) in pods().items():
        for container in containers(template):
            mode = env_of(container).get("RAY_AUTH_MODE", {}).get("value", "token")
            assert mode == "token", f"{what}/{container['name']}: RAY_AUTH_MODE={mode}"


def auth_ini(monkeypatch, tmp_path):
    """The MLflow server's basic-auth settings, as the installed mlflow reads them (MLFLOW_AUTH_CONFIG_PATH).

    Its parser (mlflow/server/auth/config.py) is loaded alone: the package's __init__ is the auth app,
    which imports Flask-WTF, installed in the pods (the lock's mlflow[auth]) but not needed here."""
    import importlib.util

    (mlflow_dir,) = importlib.util.find_spec("mlflow").submodule_search_locations
    spec = importlib.util.spec_from_file_location("mlflow_auth_config", Path(mlflow_dir) / "server" / "auth" / "config.py")
    auth_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(auth_config)

    (container,) = named("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    volumes = {v["name"]: v for v in named("Deployment", "mlflow")["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    config_map = named("ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    text = config_map["data"][path.name]
    (tmp_path / path.name).write_text(text)
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / path.name))
    return text, auth_config.read_auth_config()


def test_mlflow_requires_a_login(monkeypatch, tmp_path):
    """The server runs MLflow's basic-auth app; its settings come from a mounted ConfigMap holding no
    password; the admin's password and the form-signing key come from a Secret; the Ray pods log in
    as that admin with the same Secret."""
    import importlib.metadata

    args = mlflow_server_args()
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    assert "--app-name" in extra and extra[extra.index("--app-name") + 1] == "basic-auth", \
        "actionlab server ... -- --app-name basic-auth"
    assert "basic-auth" in {e.name for e in importlib.metadata.entry_points(group="mlflow.app")}

    text, config = auth_ini(monkeypatch, tmp_path)
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert "admin_password" not in parser["mlflow"], "the admin's password belongs in a Secret"
    assert config.admin_username and config.admin_password is None
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"
    assert config.default_permission in ("READ", "NO_PERMISSIONS")
    postgres = named("Service", "postgres")
    assert config.database_uri == f"postgresql+psycopg://actionlab@postgres:{postgres['spec']['ports'][0]['port']}/actionlab"

    (container,) = named("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    admin_password = env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == admin_password["name"]
    assert "PGPASSWORD" in env  # the auth store's database is PostgreSQL's too
    for what, (labels, template) in pods().items():
        if "ray.io/cluster" not in labels:
            continue
        (ray,) = template["spec"]["containers"]
        ray_env = env_of(ray)
        assert ray_env.get("MLFLOW_TRACKING_USERNAME", {}).get("value") == config.admin_username, what
        assert ray_env.get("MLFLOW_TRACKING_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef") == admin_password, what


def test_postgres_requires_a_password():
    """PostgreSQL is initialised with scram-sha-256 for local and network connections (the image's
    default leaves local ones on trust), with the password from a Secret the server reads as well."""
    (container,) = named("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["POSTGRES_HOST_AUTH_METHOD"]["value"] == "scram-sha-256"
    initdb_args = shlex.split(env["POSTGRES_INITDB_ARGS"]["value"])
    assert {"--auth-host=scram-sha-256", "--auth-local=scram-sha-256"} <= set(initdb_args)
    assert not any("trust" in str(entry) for entry in env.values())
    secret = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    (server,) = named("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    assert env_of(server)["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == secret


# -- NetworkPolicies -------------------------------------------------------------------------------

NAMESPACE = {"kubernetes.io/metadata.name": "actionlab"}  # where the manifests are applied (any one)
OPERATOR = ({"app.kubernetes.io/name": "kuberay-operator"}, {"kubernetes.io/metadata.name": "kuberay-system"})
STRANGERS = {"another pod of the namespace": ({"app": "other"}, NAMESPACE),
             "a pod of another namespace": ({"app": "other"}, {"kubernetes.io/metadata.name": "default"}),
             "a pod copying the Ray labels in another namespace": (
                 {"ray.io/cluster": "actionlab", "ray.io/node-type": "head"}, {"kubernetes.io/metadata.name": "default"})}


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) applied to a pod's or namespace's labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def admitted(target: dict, source: tuple[dict, dict], port: int) -> bool:
    """Whether NetworkPolicies admit a TCP connection from `source` (pod labels, namespace labels) to
    `port` of the pod with labels `target`, in the manifests' namespace: open unless some Ingress
    policy selects the pod, then only what one of their rules allows."""
    policies = [p["spec"] for p in of_kind("NetworkPolicy")
                if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], target)]
    if not policies:
        return True
    pod_labels, namespace_labels = source
    for policy in policies:
        for rule in policy.get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("from", [{"namespaceSelector": {}}]):  # no `from`: from anywhere
                if "ipBlock" in peer:
                    return True
                in_namespace = (selects(peer["namespaceSelector"], namespace_labels) if "namespaceSelector" in peer
                                else namespace_labels == NAMESPACE)
                if in_namespace and selects(peer.get("podSelector", {}), pod_labels):
                    return True
    return False


def test_every_pod_is_behind_a_network_policy():
    for what, (labels, _) in pods().items():
        if what.endswith("/submitter"):
            continue  # a client: it listens on no port
        assert any(selects(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"].get("policyTypes", [])
                   for p in of_kind("NetworkPolicy")), f"{what}: no NetworkPolicy selects it: open to every pod"
    for policy in of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule without `from` admits every pod"
            assert not any("ipBlock" in peer for peer in rule["from"]), "pods, not addresses"


def test_network_policies_admit_only_the_clusters_own_pods():
    """Who reaches what, evaluated on the pods' labels: each port answers only the pods that need it."""
    everyone = {what: (labels, NAMESPACE) for what, (labels, _) in pods().items()}
    ray = {what for what, (labels, _) in everyone.items() if labels.get("ray.io/cluster") == "actionlab"}
    submitters = {what for what in everyone if what.endswith("/submitter")}
    head = "RayCluster/actionlab/head"
    server, database = "Deployment/mlflow", "StatefulSet/postgres"
    assert head in ray and submitters and server in everyone and database in everyone
    ports = {head: (6379, 8265, 10001, 52365), "RayCluster/actionlab/gpu": (8076, 52365, 10002),
             server: (5000,), database: (5432,)}
    # (source, target, port) allowed; everything else among these (and from STRANGERS) is refused
    allowed = {(s, t, p) for s in ray for t in ray for p in ports[t]}
    allowed |= {(s, head, 8265) for s in submitters} | {("operator", head, 8265)}
    allowed |= {(s, server, 5000) for s in ray} | {(server, database, 5432)}
    sources = {**everyone, "operator": OPERATOR, **STRANGERS}
    wrong = []
    for target, target_ports in ports.items():
        for source, peer in sources.items():
            for port in target_ports:
                expected = (source, target, port) in allowed
                if admitted(everyone[target][0], peer, port) != expected:
                    wrong.append(f"{source} -> {target}:{port} {'refused' if expected else 'admitted'}")
    assert not wrong, "\n".join(wrong)


def test_network_policies_name_the_jobs_and_the_operator_namespace():
    """The job API's policy names every RayJob (its submitter pod's label), and the operator's namespace is
    the one README installs it in."""
    policy = named("NetworkPolicy", "actionlab-ray-job-api")
    text = json.dumps(policy)
    for job in of_kind("RayJob"):
        assert job["metadata"]["name"] in text, f"k8s/networkpolicy.yaml: the RayJob {job['metadata']['name']}"
    assert "--namespace kuberay-system" in (ROOT / "README.md").read_text()


# -- pods: no root, no privileges, pinned images, locked installs ----------------------------------

def all_containers() -> list[tuple[str, dict, dict]]:
    """(what, pod securityContext, container) for every container, the autoscaler's included."""
    found = []
    for what, (_, template) in pods().items():
        pod_context = template["spec"].get("securityContext", {})
        for container in containers(template):
            found.append((f"{what}/{container['name']}", pod_context, container))
    for cluster in of_kind("RayCluster"):
        head = cluster["spec"]["headGroupSpec"]["template"]
        options = cluster["spec"].get("autoscalerOptions", {})
        autoscaler = {"name": "autoscaler", "image": options.get("image", head["spec"]["containers"][0]["image"]),
                      "securityContext": options.get("securityContext", {})}
        found.append((f"RayCluster/{cluster['metadata']['name']}/head/autoscaler",
                      head["spec"].get("securityContext", {}), autoscaler))
    return found


CONTAINERS = all_containers()


@pytest.mark.parametrize("what, pod_context, container", CONTAINERS, ids=[what for what, _, _ in CONTAINERS])
def test_container_runs_as_non_root_without_privileges(what, pod_context, container):
    """runAsNonRoot with a numeric uid (the image's user, so its files stay its own), no privilege
    escalation, no capabilities, the runtime's default seccomp profile. A container's own settings
    override the pod's; KubeRay's wait-gcs-ready init container copies the Ray container's."""
    effective = {**pod_context, **container.get("securityContext", {})}
    assert effective.get("runAsNonRoot") is True
    assert isinstance(effective.get("runAsUser"), int) and effective["runAsUser"] > 0
    assert effective.get("allowPrivilegeEscalation") is False
    assert effective.get("capabilities", {}).get("drop") == ["ALL"] and not effective["capabilities"].get("add")
    assert effective.get("seccompProfile") == {"type": "RuntimeDefault"}
    assert not effective.get("privileged")
    if container["name"] == "postgres":
        assert effective["runAsUser"] == 999, "the postgres image's user owns its data folder"
    elif container["image"].startswith("rayproject/ray:"):
        assert (effective["runAsUser"], effective.get("runAsGroup")) == (1000, 100), "the Ray image's user `ray`"


@pytest.mark.parametrize("what, pod_context, container", CONTAINERS, ids=[what for what, _, _ in CONTAINERS])
def test_image_is_pinned_by_digest(what, pod_context, container):
    """Every image names its tag and a digest, which k8s/render.sh fills in (it is looked up where the
    registry is reachable; none is made up here)."""
    name, _, digest = container["image"].partition("@")
    repository = name.rpartition(":")[0]
    assert repository and digest, f"{container['image']}: write <image>:<tag>@{{digest placeholder}}"
    assert digest == DIGEST_PLACEHOLDERS[repository], f"{container['image']}: @{DIGEST_PLACEHOLDERS[repository]}"
    assert digest in RENDER.read_text()


def render(files: list[Path], **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RENDER), *map(str, files)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=30)


DIGESTS = {"RAY_IMAGE_DIGEST": "sha256:" + "0123456789abcdef" * 4,  # test values, not real digests
           "POSTGRES_IMAGE_DIGEST": "sha256:" + "fedcba9876543210" * 4}
ZIP = "https://github.com/example/actionlab/archive/" + "a" * 40 + ".zip"


@needs_bash
def test_render_pins_every_image():
    """k8s/render.sh on every manifest gives objects that validate, every image as <image>:<tag>@sha256:<64 hex>."""
    run = render(sorted(K8S.glob("*.yaml")), **DIGESTS, ACTIONLAB_ZIP=ZIP)
    assert run.returncode == 0, run.stderr
    docs = [doc for doc in yaml.safe_load_all(run.stdout) if doc]
    assert len(docs) == len(MANIFESTS)
    images = []
    for doc in docs:
        assert problems(doc) == []
        text = json.dumps(doc)
        images += re.findall(r'"image": "([^"]+)"', text)
        assert not any(name in text for name in (*DIGESTS, "ACTIONLAB_ZIP"))
    assert images and all(re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image) for image in images), images
    assert {yaml.safe_load(job["runtimeEnvYAML"])["working_dir"] for job in
            (doc["spec"] for doc in docs if doc["kind"] == "RayJob")} == {ZIP}


@needs_bash
@pytest.mark.parametrize("env, files, message", [
    ({}, ["raycluster.yaml"], "needs RAY_IMAGE_DIGEST=sha256:"),
    ({**DIGESTS, "RAY_IMAGE_DIGEST": "sha256:abc"}, ["raycluster.yaml"], "needs RAY_IMAGE_DIGEST="),
    ({"RAY_IMAGE_DIGEST": DIGESTS["RAY_IMAGE_DIGEST"]}, ["mlflow.yaml"], "needs POSTGRES_IMAGE_DIGEST="),
    (DIGESTS, ["sweep-job.yaml"], "needs ACTIONLAB_ZIP=an https URL"),
    ({**DIGESTS, "ACTIONLAB_ZIP": "ACTIONLAB_ZIP.zip"}, ["ablate-job.yaml"], "needs ACTIONLAB_ZIP="),
], ids=["no-digest", "short-digest", "no-postgres-digest", "no-zip", "placeholder-as-value"])
def test_render_refuses_missing_values(env, files, message, monkeypatch):
    for name in (*DIGESTS, "ACTIONLAB_ZIP"):
        monkeypatch.delenv(name, raising=False)
    run = render([K8S / f for f in files], **env)
    assert run.returncode == 2 and run.stdout == "", run.stdout
    assert message in run.stderr, run.stderr


def test_pods_install_from_the_lock():
    """Every pod that runs actionlab installs it with k8s/install.sh from the ConfigMap README makes of the
    script and the lock, before it starts anything."""
    created = readme_creates()
    for what, (_, template) in pods().items():
        if what.endswith("/submitter"):
            continue  # runs the image's `ray job submit` only
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for container in template["spec"]["containers"]:
            if not container["image"].startswith("rayproject/ray:"):
                continue
            script = container["args"][0]
            assert script.startswith("bash /etc/actionlab/install.sh || exit 1;"), f"{what}: {script}"
            assert "pip install" not in script
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/actionlab"]
            assert mount.get("readOnly") is True
            config_map = volumes[mount["name"]]["configMap"]["name"]
            assert {"install.sh", "requirements.lock"} <= created.get(("configmap", config_map), set()), \
                (f"README.md: kubectl create configmap {config_map} "
                 "--from-file=k8s/install.sh --from-file=k8s/requirements.lock")


def read_lock() -> dict[str, list[tuple[str, str, list[str]]]]:
    """name -> [(version, marker, hashes)] of k8s/requirements.lock (one entry per marker fork)."""
    entries = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#") or not block.strip():
            continue
        head = block.split("\\\n", 1)[0]
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)(?:\s*;\s*(.+?))?\s*", head)
        assert match, f"k8s/requirements.lock: not a pin: {head!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]+)", block)
        entries.setdefault(match[1].lower().replace("_", "-"), []).append((match[2], match[3] or "", hashes))
    return entries


def locked_version(entries, name: str, environment: dict) -> str | None:
    """The version the lock installs of `name` in `environment` (a dict of marker variables)."""
    from packaging.markers import Marker

    for version, marker, _ in entries.get(name.lower().replace("_", "-"), []):
        if not marker or Marker(marker).evaluate(environment):
            return version
    return None


# the Ray image's Python (rayproject/ray:2.60.0-py311-gpu) and cluster.yaml's Ubuntu 22.04 nodes
ENVIRONMENTS = {"py311": {"python_version": "3.11", "python_full_version": "3.11.11"},
                "py310": {"python_version": "3.10", "python_full_version": "3.10.12"}}


def test_lock_pins_every_file_by_hash():
    """Every requirement is `name==version` with sha256 hashes (what pip's --require-hashes demands), and
    the lock fits in a ConfigMap (1 MiB, with k8s/install.sh)."""
    entries = read_lock()
    assert len(entries) > 50
    for name, pins in entries.items():
        for version, _, hashes in pins:
            assert hashes and all(len(h) == 64 for h in hashes), f"{name}=={version}: no sha256 hash"
    assert LOCK.stat().st_size + INSTALL.stat().st_size < 1_000_000
    assert "uv pip compile pyproject.toml k8s/requirements.in" in LOCK.read_text(), "the header says how to remake it"


@pytest.mark.parametrize("python", list(ENVIRONMENTS))
def test_lock_has_every_dependency(python):
    """pyproject.toml's dependencies, the MLflow server's auth extra, the build backend for actionlab
    itself, and the image's Ray, each at a version the project accepts: a dependency added to
    pyproject.toml fails here until the lock is made again."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11

    environment = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
                   "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", **ENVIRONMENTS[python]}
    entries = read_lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    wanted += [Requirement(line.split("#")[0]) for line in (K8S / "requirements.in").read_text().splitlines()
               if line.split("#")[0].strip()]
    missing = []
    for requirement in wanted:
        version = locked_version(entries, requirement.name, environment)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{requirement} (locked: {version})")
    assert not missing, "k8s/requirements.lock: " + ", ".join(missing)
    assert locked_version(entries, "flask-wtf", environment), "mlflow[auth]: the basic-auth app's Flask-WTF"
    (cluster,) = of_kind("RayCluster")
    assert locked_version(entries, "ray", environment) == cluster["spec"]["rayVersion"]


FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$PIP_LOG"
"""
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@needs_bash
@pytest.mark.parametrize("source, ok", [
    (f"actionlab @ git+https://github.com/example/actionlab@{COMMIT}", True),
    ("actionlab @ git+https://github.com/example/actionlab@main", False),
    ("actionlab @ git+https://github.com/example/actionlab@0123456", False),
    ("actionlab>=0.1", False),
    ("", False),
], ids=["commit", "branch", "short-commit", "index", "unset"])
def test_install_script(source, ok, tmp_path):
    """k8s/install.sh with a fake `python -m pip`: the lock with --require-hashes and --no-deps, then
    actionlab at a commit without dependencies or a build environment; any other source is refused
    before anything is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / "pip.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PIP_LOG": str(log),
           "ACTIONLAB_PIP": source}
    run = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    if not ok:
        assert run.returncode == 2 and calls == [], (run.stderr, calls)
        assert "full 40-character commit" in run.stderr
        return
    assert run.returncode == 0, run.stderr
    assert calls == [f"-m pip install --no-cache-dir --no-deps --require-hashes -r {LOCK}",
                     f"-m pip install --no-cache-dir --no-deps --no-build-isolation {source}"]


# -- elastic training on spot GPU pods ---------------------------------------------------------------

def test_gpu_group_fits_an_elastic_run():
    """minReplicas is the documented run's num_workers min, maxReplicas room for its max (as cluster.yaml's GPU
    nodes); the in-tree autoscaler grows the group and keeps a pod that returned past the run's next resize
    check."""
    from orchestrator.config import ScalingConfig

    text = (K8S / "raycluster.yaml").read_text()
    (line,) = re.findall(r"^\s*#\s+(scaling: \{[^}]*\})\s*$", text, re.MULTILINE)
    scaling = yaml.safe_load(line)["scaling"]
    low, high = ScalingConfig.model_validate(scaling).num_workers  # a section the experiment file takes
    (cluster,) = of_kind("RayCluster")
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert 0 < low < high
    assert group["minReplicas"] == low and group["maxReplicas"] >= high
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    options = cluster["spec"]["autoscalerOptions"]
    assert options["upscalingMode"] in ("Default", "Aggressive"), "Conservative waits for pending pods only"
    assert options["idleTimeoutSeconds"] > scaling["resize_interval_s"]
    aws = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]["gpu_worker"]
    assert (group["minReplicas"], group["maxReplicas"]) == (aws["min_workers"], aws["max_workers"])


@pytest.mark.parametrize("job", of_kind("RayJob"), ids=lambda job: job["metadata"]["name"])
def test_job_shows_an_elastic_run(job, monkeypatch):
    """Each RayJob's header shows the --set options of an elastic run; its entrypoint with them loads, and
    the run's [min, max] workers fit the GPU group."""
    from orchestrator.cli import build_parser
    from orchestrator.commands._common import load_config

    (path,) = [K8S / key.split("#")[0] for key, doc in MANIFESTS.items() if doc is job]
    (line,) = [line.lstrip("# ") for line in path.read_text().splitlines()
               if line.startswith("#") and "--set" in line and "scaling.num_workers=" in line]
    monkeypatch.chdir(ROOT)
    cfg = load_config(build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[1:] + shlex.split(line)))
    (group,) = of_kind("RayCluster")[0]["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] <= cfg.scaling.min_workers < cfg.scaling.max_workers <= group["maxReplicas"]
    assert cfg.scaling.checkpoint_every_steps > 0


def test_gpu_pods_drain_on_sigterm():
    """A reclaimed spot node's pods get SIGTERM. The GPU container's process is `ray start --block` (KubeRay's
    generated command, exec'd), which then drains its Ray node with reason PREEMPTION for
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (read by the installed Ray), ending under the pod's grace period,
    itself inside AWS's 2 minutes' notice."""
    (cluster,) = of_kind("RayCluster")
    (group,) = cluster["spec"]["workerGroupSpecs"]
    spec = group["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"][0].rstrip().endswith('eval "exec $KUBERAY_GEN_RAY_START_CMD"')
    drain_s = env_of(container)["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]["value"]
    assert 0 < float(drain_s) < spec["terminationGracePeriodSeconds"] <= 120
    read = subprocess.run([sys.executable, "-c", "from ray._private import ray_constants as c; "
                           "print(c.RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S)"],
                          env={**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": drain_s},
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0 and float(read.stdout) == float(drain_s), read.stderr


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
    claim_templates = {t["metadata"]["name"]: {} for s in of_kind("StatefulSet") for t in s["spec"]["volumeClaimTemplates"]}
    for template in pod_templates():
        spec = template["spec"]
        volumes = {**claim_templates, **{v["name"]: v for v in spec.get("volumes", [])}}
        for container in containers(template):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{container['name']}: no volume {mount['name']}"
                claim = volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName")
                if claim is not None:
                    assert claim in claims, f"{container['name']}: no PersistentVolumeClaim {claim}"
                    assert mount["mountPath"] == SHARED_MOUNT
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= template.get("metadata", {}).get("labels", {}).items()
                   for template in pod_templates()), f"Service {service['metadata']['name']} selects no pod"
    for workload in of_kind("Deployment") + of_kind("StatefulSet"):
        assert workload["spec"]["selector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_secrets_and_config_maps_exist():
    """Every Secret and ConfigMap the pods read is a manifest here (no secret in one) or made by README's
    `kubectl create` commands with the keys read (passwords are generated there, never in git)."""
    created = readme_creates()
    for doc in of_kind("ConfigMap"):
        created[("configmap", doc["metadata"]["name"])] = set(doc["data"])
    refs = set()
    for template in pod_templates():
        for container in containers(template):
            for env in container.get("env", []):
                for kind, ref in env.get("valueFrom", {}).items():
                    refs.add(({"secretKeyRef": "secret", "configMapKeyRef": "configmap"}[kind], ref["name"], ref["key"]))
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                refs.add(("configmap", volume["configMap"]["name"], None))
    for cluster in of_kind("RayCluster"):
        refs.add(("secret", cluster["spec"]["authOptions"]["secretName"], "auth_token"))
    assert refs, "the pods read no Secret or ConfigMap"
    for kind, name, key in sorted(refs, key=str):
        command = "secret generic" if kind == "secret" else kind
        assert (kind, name) in created, f"README.md: `kubectl create {command} {name} ...`"
        assert key is None or key in created[kind, name], f"README.md: {kind} {name} needs the key {key}"
