"""A JSON Schema of the KubeRay v1 RayCluster / RayJob fields (and the Kubernetes core/v1 pod fields inside
them), plus the KubeRay operator's own spec rules: what a cluster would accept or reject of our manifests.

KubeRay's CRDs are not installed here and there is no API server, and an API server would not even catch a
misspelled field: CRD schemas *prune* unknown fields (kubectl at most warns). So this schema sets
`additionalProperties: false` at every level it checks, and a misspelled key anywhere in those levels is
an error naming its path.

Written by hand (not copied) from:
- KubeRay v1.7.0, `ray-operator/apis/ray/v1/raycluster_types.go` and `rayjob_types.go` (the Go structs'
  json tags, `+kubebuilder:validation:Enum` markers and required fields), and the operator's spec checks in
  `ray-operator/controllers/ray/utils/validation.go` (`ValidateRayClusterSpec`, `ValidateRayJobSpec`,
  the metadata name checks), restated in `operator_errors` below for the rules our manifests can break.
  Fields used here exist since KubeRay v1.6.0 (`authOptions` is the newest).
- Kubernetes core/v1 (`k8s.io/api` v0.36.0, i.e. Kubernetes 1.36, the version KubeRay v1.7.0 builds
  against): the field names of PodTemplateSpec, PodSpec, Container, EnvVar, EnvVarSource,
  SecretKeySelector, EnvFromSource, ResourceRequirements, ContainerPort, VolumeMount, Volume and the volume
  sources we use, Toleration, ObjectMeta, PersistentVolumeClaimSpec. Objects we do not use are checked by
  name only (e.g. `affinity` must be spelled right; what is inside it is not checked).
"""
from __future__ import annotations

import re
from typing import Any

KUBERAY_VERSION = "v1.7.0"
K8S_API_VERSION = "k8s.io/api v0.36.0 (Kubernetes 1.36)"

ANY: dict = {}
STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
NUM = {"type": "number"}
STR_MAP = {"type": "object", "additionalProperties": STR}
# resource.Quantity as the API server parses it (the CRDs' int-or-string pattern).
QUANTITY = {"anyOf": [INT, NUM, {"type": "string", "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                                                              r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}]}


def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict:
    """A closed object: only these property names (so a misspelled one fails)."""
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


def names(*fields: str, **typed: Any) -> dict[str, Any]:
    """Property map: the listed names unchecked inside, the keyword ones with their schema."""
    out: dict[str, Any] = {name: ANY for name in fields}
    out.update(typed)
    return out


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


# ---- Kubernetes core/v1 ------------------------------------------------------------------------------------
OBJECT_META = obj(names("generateName", "namespace", "finalizers", "ownerReferences", "uid", "resourceVersion",
                        "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                        "managedFields", "selfLink", name=STR, labels=STR_MAP, annotations=STR_MAP))
TEMPLATE_META = obj(names("finalizers", "name", "namespace", labels=STR_MAP, annotations=STR_MAP))

RESOURCES = obj(names("claims", limits={"type": "object", "additionalProperties": QUANTITY},
                      requests={"type": "object", "additionalProperties": QUANTITY}))
SECRET_KEY_SELECTOR = obj(names(key=STR, name=STR, optional=BOOL), required=("key",))
ENV_VAR_SOURCE = obj(names("configMapKeyRef", "fieldRef", "fileKeyRef", "resourceFieldRef",
                           secretKeyRef=SECRET_KEY_SELECTOR))
ENV_VAR = obj(names(name=STR, value=STR, valueFrom=ENV_VAR_SOURCE), required=("name",))
ENV_FROM = obj(names("configMapRef", prefix=STR, secretRef=obj(names(name=STR, optional=BOOL))))
CONTAINER_PORT = obj(names(containerPort=INT, hostIP=STR, hostPort=INT, name=STR,
                           protocol={"enum": ["TCP", "UDP", "SCTP"]}), required=("containerPort",))
VOLUME_MOUNT = obj(names("mountPropagation", "recursiveReadOnly", mountPath=STR, name=STR, readOnly=BOOL,
                         subPath=STR, subPathExpr=STR), required=("mountPath", "name"))
CONTAINER = obj(names(
    "lifecycle", "livenessProbe", "readinessProbe", "resizePolicy", "restartPolicy", "restartPolicyRules",
    "securityContext", "startupProbe", "stdin", "stdinOnce", "terminationMessagePath", "terminationMessagePolicy",
    "tty", "volumeDevices",
    args=array(STR), command=array(STR), env=array(ENV_VAR), envFrom=array(ENV_FROM), image=STR,
    imagePullPolicy={"enum": ["Always", "IfNotPresent", "Never"]}, name=STR, ports=array(CONTAINER_PORT),
    resources=RESOURCES, volumeMounts=array(VOLUME_MOUNT), workingDir=STR), required=("name",))
KEY_TO_PATH = obj(names(key=STR, mode=INT, path=STR), required=("key", "path"))
VOLUME = obj(names(
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "downwardAPI", "ephemeral",
    "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "image", "iscsi", "nfs",
    "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "storageos",
    "vsphereVolume",
    name=STR,
    configMap=obj(names(defaultMode=INT, items=array(KEY_TO_PATH), name=STR, optional=BOOL)),
    emptyDir=obj(names(medium={"enum": ["", "Memory", "HugePages"]}, sizeLimit=QUANTITY)),
    hostPath=obj(names(path=STR, type=STR), required=("path",)),
    persistentVolumeClaim=obj(names(claimName=STR, readOnly=BOOL), required=("claimName",)),
    secret=obj(names(defaultMode=INT, items=array(KEY_TO_PATH), optional=BOOL, secretName=STR))),
    required=("name",))
TOLERATION = obj(names(effect={"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}, key=STR,
                       operator={"enum": ["Exists", "Equal"]}, tolerationSeconds=INT, value=STR))
POD_SPEC = obj(names(
    "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "dnsConfig", "dnsPolicy",
    "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers",
    "hostname", "hostnameOverride", "imagePullSecrets", "nodeName", "os", "overhead", "preemptionPolicy",
    "priority", "priorityClassName", "readinessGates", "resourceClaims", "resources", "restartPolicy",
    "runtimeClassName", "schedulerName", "schedulingGates", "schedulingGroup", "securityContext",
    "serviceAccount", "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "subdomain",
    "terminationGracePeriodSeconds", "topologySpreadConstraints",
    containers={**array(CONTAINER), "minItems": 1}, initContainers=array(CONTAINER), nodeSelector=STR_MAP,
    tolerations=array(TOLERATION), volumes=array(VOLUME)), required=("containers",))
POD_TEMPLATE = obj(names(metadata=TEMPLATE_META, spec=POD_SPEC))

PVC_SPEC = obj(names("dataSource", "dataSourceRef", "selector", "volumeAttributesClassName", "volumeName",
                     accessModes=array({"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany",
                                                 "ReadWriteOncePod"]}),
                     resources=obj(names(limits={"type": "object", "additionalProperties": QUANTITY},
                                         requests={"type": "object", "additionalProperties": QUANTITY})),
                     storageClassName=STR, volumeMode={"enum": ["Filesystem", "Block"]}))

# ---- KubeRay ray.io/v1 ------------------------------------------------------------------------------------
AUTH_OPTIONS = obj(names(enableK8sTokenAuth=BOOL, mode={"enum": ["disabled", "token"]}, secretName=STR))
AUTOSCALER_OPTIONS = obj(names(
    "args", "command", "env", "envFrom", "image", "imagePullPolicy", "securityContext", "volumeMounts",
    idleTimeoutSeconds=INT, resources=RESOURCES, upscalingMode={"enum": ["Default", "Aggressive", "Conservative"]},
    version={"enum": ["v1", "v2"]}))
HEAD_GROUP = obj(names("enableIngress", "headService", "ingressOptions", "serviceType",
                       labels=STR_MAP, rayStartParams=STR_MAP, resources=STR_MAP, template=POD_TEMPLATE),
                 required=("template",))
WORKER_GROUP = obj(names("scaleStrategy", "suspend",
                         groupName=STR, idleTimeoutSeconds=INT, labels=STR_MAP, maxReplicas=INT, minReplicas=INT,
                         numOfHosts=INT, priority=INT, rayStartParams=STR_MAP, replicas=INT, resources=STR_MAP,
                         template=POD_TEMPLATE),
                   required=("groupName", "maxReplicas", "minReplicas", "template"))
RAY_CLUSTER_SPEC = obj(names(
    "gcsFaultToleranceOptions", "headServiceAnnotations", "historyServerOptions", "managedBy", "networkPolicy",
    "suspend", "tlsOptions", "upgradeStrategy",
    authOptions=AUTH_OPTIONS, autoscalerOptions=AUTOSCALER_OPTIONS, enableInTreeAutoscaling=BOOL,
    headGroupSpec=HEAD_GROUP, rayVersion=STR, workerGroupSpecs=array(WORKER_GROUP)), required=("headGroupSpec",))
RAY_JOB_SPEC = obj(names(
    "deletionStrategy", "managedBy", "submitterConfig",
    activeDeadlineSeconds=INT, backoffLimit=INT, clusterSelector=STR_MAP, entrypoint=STR, entrypointNumCpus=NUM,
    entrypointNumGpus=NUM, entrypointResources=STR, jobId=STR, metadata=STR_MAP,
    preRunningDeadlineSeconds={"type": "integer", "minimum": 1}, rayClusterSpec=RAY_CLUSTER_SPEC,
    runtimeEnvYAML=STR, shutdownAfterJobFinishes=BOOL,
    submissionMode={"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
    submitterPodTemplate=POD_TEMPLATE, suspend=BOOL, ttlSecondsAfterFinished=INT))


def _document(api_version: str, kind: str, spec: dict) -> dict:
    return obj({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": OBJECT_META,
                "spec": spec}, required=("apiVersion", "kind", "metadata", "spec"))


SCHEMAS = {("ray.io/v1", "RayCluster"): _document("ray.io/v1", "RayCluster", RAY_CLUSTER_SPEC),
           ("ray.io/v1", "RayJob"): _document("ray.io/v1", "RayJob", RAY_JOB_SPEC),
           ("v1", "PersistentVolumeClaim"): _document("v1", "PersistentVolumeClaim", PVC_SPEC)}

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAYCLUSTER_NAME, MAX_RAYJOB_NAME = 53, 47          # utils/constant.go: MaxRayClusterNameLength, minus 6 for jobs


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in match.groups()) if match else None


def _cluster_spec_errors(spec: dict, where: str) -> list[str]:
    """The checks of KubeRay v1.7.0 ValidateRayClusterSpec that a manifest can fail."""
    errors = []
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    groups = [("Head", spec.get("headGroupSpec") or {})] + [(g.get("groupName", "?"), g)
                                                            for g in spec.get("workerGroupSpecs") or []]
    for name, group in groups:
        params = group.get("rayStartParams") or {}
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and group.get("resources"):
            errors.append(f"{where}: group {name}: resource fields set in both rayStartParams and resources")
        if "labels" in params:
            errors.append(f"{where}: group {name}: rayStartParams['labels'] is not supported (use labels)")
        if name == "Head":
            continue
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            errors.append(f"{where}: worker group {name} must set minReplicas and maxReplicas without autoscaling")
        if isinstance(low, int) and isinstance(high, int):
            if low < 0 or high < 0 or low > high:
                errors.append(f"{where}: worker group {name}: need 0 <= minReplicas <= maxReplicas")
            replicas = group.get("replicas")
            if isinstance(replicas, int) and not low <= replicas <= high:
                errors.append(f"{where}: worker group {name}: replicas {replicas} outside [{low}, {high}]")
    auth = spec.get("authOptions") or {}
    if auth and auth.get("mode", "token") == "token":                        # mode defaults to token
        version = _version_tuple(spec.get("rayVersion", ""))
        if version is None or version < (2, 52, 0):
            errors.append(f"{where}: authOptions.mode 'token' needs rayVersion >= 2.52.0")
    if auth.get("enableK8sTokenAuth") and auth.get("secretName"):
        errors.append(f"{where}: authOptions.enableK8sTokenAuth and secretName are exclusive")
    return errors


def operator_errors(doc: dict) -> list[str]:
    """The KubeRay operator's own rules (validation.go) beyond field names and types."""
    kind, meta, spec = doc.get("kind"), doc.get("metadata") or {}, doc.get("spec") or {}
    errors = []
    name = meta.get("name", "")
    if kind in ("RayCluster", "RayJob"):
        limit = MAX_RAYCLUSTER_NAME if kind == "RayCluster" else MAX_RAYJOB_NAME
        if len(name) > limit or not DNS1035.match(name):
            errors.append(f"metadata.name: {name!r} must be a DNS-1035 label of at most {limit} characters")
    if kind == "RayCluster":
        errors += _cluster_spec_errors(spec, "spec")
    if kind == "RayJob":
        shutdown = bool(spec.get("shutdownAfterJobFinishes"))
        selector = bool(spec.get("clusterSelector"))
        if spec.get("suspend") and not shutdown:
            errors.append("spec: a RayJob with shutdownAfterJobFinishes false cannot be suspended")
        if spec.get("ttlSecondsAfterFinished", 0) < 0:
            errors.append("spec.ttlSecondsAfterFinished must be >= 0")
        if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
            errors.append("spec: ttlSecondsAfterFinished needs shutdownAfterJobFinishes true")
        if not selector and not spec.get("rayClusterSpec"):
            errors.append("spec: one of rayClusterSpec or clusterSelector must be set")
        if selector and spec.get("backoffLimit"):
            errors.append("spec: backoffLimit is incompatible with clusterSelector mode")
        if spec.get("submissionMode") == "InteractiveMode" and spec.get("backoffLimit"):
            errors.append("spec: backoffLimit is incompatible with InteractiveMode")
        if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
            errors.append("spec.activeDeadlineSeconds must be a positive integer")
        if spec.get("backoffLimit") is not None and spec["backoffLimit"] < 0:
            errors.append("spec.backoffLimit must be >= 0")
        if not spec.get("entrypoint") and spec.get("submissionMode", "K8sJobMode") != "InteractiveMode":
            errors.append("spec.entrypoint is empty: nothing to submit")
        if spec.get("rayClusterSpec"):
            errors += _cluster_spec_errors(spec["rayClusterSpec"], "spec.rayClusterSpec")
    return errors


def schema_errors(doc: dict) -> list[str]:
    """One line per violation of the field schema: `<path>: <message>`."""
    import jsonschema

    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in SCHEMAS:
        return [f"apiVersion/kind {key} is not one of {sorted(SCHEMAS)}"]
    validator = jsonschema.Draft202012Validator(SCHEMAS[key])
    out = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "(document)"
        out.append(f"{path}: {error.message}")
    return out


def check(doc: dict) -> list[str]:
    return schema_errors(doc) + operator_errors(doc)
