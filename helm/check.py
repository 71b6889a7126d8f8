#!/usr/bin/env python3
"""Checks the Helm chart in helm/ratchet without a cluster or a helm binary.

    python3 helm/check.py
        For every value set (default, five voters, TLS disabled, cert-manager, three
        regions): lints the chart, renders it for each release of the set, validates every
        rendered object against the Kubernetes schemas, and checks the chart's own
        invariants (a group that can found itself, a PDB that keeps a quorum, edges that
        drain, probes on the right paths, every ratchet process given its component's
        certificate from a mounted Secret, or --insecure when TLS is off, backups that
        run one at a time onto a volume that outlives the release).
        Then, over everything rendered:
          alerts   promtool check rules on the PrometheusRule, and promtool test rules with
                   ratchet/ci/prometheus-rules-test.yaml
          upgrade  the fields Kubernetes cannot change in place (StatefulSet selector,
                   serviceName, volumeClaimTemplates, podManagementPolicy; Deployment
                   selector; Service clusterIP; PersistentVolumeClaim accessModes and
                   storageClassName) against ratchet/ci/immutable-fields.json
          checkov  checkov's Kubernetes checks; the findings accepted on purpose are listed
                   in ratchet/ci/checkov-skips.yaml and explained in ratchet/README.md
        Prints a summary and exits non-zero on any failure.

    python3 helm/check.py immutable --update
        Records the immutable fields as rendered now in ratchet/ci/immutable-fields.json.
        Refuses a changed or removed field unless Chart.yaml's version was raised
        incompatibly (major; minor for 0.y.z) since the record.

    python3 helm/check.py pods [--values FILE]... [--set KEY=VALUE]... [--release NAME]
                               [--namespace NS] [--cluster-domain DOMAIN]
        Prints, as JSON, the decider pods that the rendered StatefulSet makes: for each
        ordinal, every (init) container's image, command, args, env and security context as
        Kubernetes resolves them (downward API fields, $(VAR) expansion) and its volumes
        (ConfigMap contents included); the address of the deciders' client Service; one pod
        of the edge Deployment and, with backup.enabled, the backup CronJob's pod the same
        way. tests/helm_rendered.rs starts real deciders from this, and runs the backup pod
        against them; tests/image.rs runs the deciders and an edge in Docker from it.

Helm runs in-process through the PyPI package helm-python-sdk, which bundles Helm's Go
SDK; schemas come from kubernetes-validate. Both install with pip; promtool comes from
Debian's prometheus package and checkov (PyPI) lives in its own virtualenv under
~/.cache/ratchet/venv ($RATCHET_VENV): deploy/install-deps.sh test installs all of them.
Nothing else is fetched: no chart repositories, no cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as error:  # pragma: no cover - the message is the point
    sys.exit(
        f"helm/check.py: {error.name} is missing: run deploy/install-deps.sh "
        "(python3 -m pip install helm-python-sdk kubernetes-validate)"
    )

HERE = Path(__file__).resolve().parent
CHART = HERE / "ratchet"

# The Kubernetes version rendered for and validated against: recent, and shipped by
# kubernetes-validate (its schemas go up to 1.37).
KUBE_VERSION = "1.34.0"

# Objects whose schemas are CRDs that kubernetes-validate does not ship: rendered and
# parsed, but not schema-validated (reported as such).
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
}

# The alerts' promtool unit tests, and the release whose rendered rules they test (its
# values switch the PrometheusRule on; the tests' series carry its namespace and jobs).
RULES_TEST = CHART / "ci" / "prometheus-rules-test.yaml"
RULES_RELEASE = ("five-voters", "ratchet")

# Fields that Kubernetes refuses to change on an existing object, so that `helm upgrade`
# fails on them (kind -> dotted paths in the object). Their rendered values, for every
# release of every value set, are recorded in IMMUTABLE_FILE.
IMMUTABLE_FIELDS = {
    "StatefulSet": ["spec.selector", "spec.serviceName", "spec.volumeClaimTemplates", "spec.podManagementPolicy"],
    "Deployment": ["spec.selector"],
    # A headless Service cannot become a ClusterIP one, nor the reverse.
    "Service": ["spec.clusterIP"],
    # The backup volume the chart makes (its size may grow, nothing else may change).
    "PersistentVolumeClaim": ["spec.accessModes", "spec.storageClassName"],
}
IMMUTABLE_FILE = CHART / "ci" / "immutable-fields.json"

# checkov runs from its own virtualenv (deploy/install-deps.sh test makes it); the findings
# accepted on purpose are listed in CHECKOV_SKIPS and explained in CHART_README.
CHECKOV = Path(os.environ.get("RATCHET_VENV", Path.home() / ".cache" / "ratchet" / "venv")) / "bin" / "checkov"
CHECKOV_SKIPS = CHART / "ci" / "checkov-skips.yaml"
CHART_README = CHART / "README.md"


@dataclasses.dataclass
class Release:
    name: str
    namespace: str
    values_files: list[str]


@dataclasses.dataclass
class ValueSet:
    name: str
    releases: list[Release]


VALUE_SETS = [
    ValueSet("default", [Release("ratchet", "ratchet", ["ci/default-values.yaml"])]),
    ValueSet("five-voters", [Release("ratchet", "ratchet", ["ci/five-voters-values.yaml"])]),
    # Transport security the other two ways: off (--insecure everywhere), and certificates
    # from cert-manager (the sets above use pre-made Secrets, the default).
    ValueSet("tls-disabled", [Release("ratchet", "ratchet", ["ci/tls-disabled-values.yaml"])]),
    ValueSet("cert-manager", [Release("ratchet", "ratchet", ["ci/cert-manager-values.yaml"])]),
    # One release per region; together they must describe one group.
    ValueSet(
        "three-region",
        [
            Release(f"ratchet-{region}", "ratchet", [f"ci/three-region/values-region-{suffix}.yaml"])
            for region, suffix in [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d-readonly")]
        ],
    ),
]


# --------------------------------------------------------------------------- values


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of -f files and --set: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(files: list[str], sets: list[str] = ()) -> dict[str, Any]:
    """The user-supplied values of a release: files relative to the chart, then --set."""
    values: dict[str, Any] = {}
    for name in files:
        path = Path(name) if Path(name).is_absolute() else CHART / name
        if not path.exists():
            path = Path(name).resolve()
        values = merge(values, helm.values_from_yaml(path.read_text()))
    for expression in sets:
        values = merge(values, helm.parse_set_string(expression))
    return values


def render(chart: helm.Chart, release: str, namespace: str, values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, as `helm install --dry-run` would produce."""
    return chart.render(values=values, name=release, namespace=namespace, is_install=True)


def objects_of(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for every YAML document rendered, hooks and tests included."""
    objects = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append((path, document))
    return objects


# --------------------------------------------------------------------------- checks


class Findings:
    """Failures and notes of one release; a release passes with no failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)


def lint(release: Release, values: dict[str, Any], findings: Findings) -> str:
    """`helm lint --strict` with the release's values; returns a short verdict."""
    report = helm.lint(
        str(CHART),
        values,
        strict=True,
        namespace=release.namespace,
        kube_version=f"v{KUBE_VERSION}",
    )
    severities = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
    counts: dict[str, int] = {}
    for message in report.get("messages", []):
        severity = severities.get(message.get("severity"), "unknown")
        counts[severity] = counts.get(severity, 0) + 1
        line = f"lint {severity}: {message.get('path')}: {message.get('error')}"
        if severity == "info":
            findings.notes.append(line)
        else:
            findings.fail(line)
    for error in report.get("errors", []) or []:
        findings.fail(f"lint: {error}")
    if not counts:
        return "clean"
    return ", ".join(f"{n} {severity}" for severity, n in sorted(counts.items()))


def validate(objects: list[tuple[str, dict[str, Any]]], findings: Findings) -> tuple[int, int]:
    """Validates every object against the Kubernetes schemas (strict: unknown fields fail)."""
    validated = skipped = 0
    for path, document in objects:
        kind = (document.get("apiVersion"), document.get("kind"))
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')} ({path})"
        try:
            kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
            validated += 1
        except kubernetes_validate.SchemaNotFoundError as error:
            if kind in CRD_KINDS:
                skipped += 1
                findings.notes.append(f"{name}: a CRD, parsed but not schema-validated")
            else:
                findings.fail(f"{name}: {error.message}")
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path) or "(root)"
            findings.fail(f"{name}: invalid at {where}: {error.message}")
    return validated, skipped


def find(objects, kind: str, component: str | None = None) -> list[dict[str, Any]]:
    found = []
    for _, document in objects:
        labels = document.get("metadata", {}).get("labels", {}) or {}
        if document.get("kind") == kind and (component is None or labels.get("app.kubernetes.io/component") == component):
            found.append(document)
    return found


def flag(args: list[str], name: str) -> str | None:
    """The value after `name` in an argument list."""
    for index, argument in enumerate(args[:-1]):
        if argument == name:
            return args[index + 1]
    return None


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def check_invariants(release: Release, values: dict[str, Any], objects, findings: Findings) -> dict[str, Any]:
    """What the chart promises beyond valid YAML; returns facts for the cross-release checks."""
    facts: dict[str, Any] = {}
    statefulsets = find(objects, "StatefulSet", "decider")
    findings.require(len(statefulsets) == 1, f"expected one decider StatefulSet, found {len(statefulsets)}")
    if not statefulsets:
        return facts
    sts = statefulsets[0]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    findings.require(spec.get("podManagementPolicy") == "Parallel", "decider StatefulSet: podManagementPolicy must be Parallel")
    findings.require(bool(spec.get("volumeClaimTemplates")), "decider StatefulSet: no volumeClaimTemplates")
    services = {s["metadata"]["name"]: s for s in find(objects, "Service")}
    headless = services.get(spec.get("serviceName"))
    findings.require(
        headless is not None
        and headless["spec"].get("clusterIP") == "None"
        and headless["spec"].get("publishNotReadyAddresses") is True,
        "decider StatefulSet: serviceName must be a headless Service publishing not-ready addresses",
    )

    decider = container(pod, "decider")
    args = decider["args"]
    findings.require(flag(args, "--name") == "$(POD_NAME)", "decider: --name must be $(POD_NAME)")
    advertise = flag(args, "--advertise") or ""
    findings.require(advertise.startswith("$(POD_NAME)."), f"decider: --advertise must be the pod's DNS name, is {advertise!r}")
    members = [entry.split("=", 1) for entry in (flag(args, "--initial-cluster") or "").split(",") if entry]
    findings.require(len(members) > 0, "decider: --initial-cluster is empty")
    findings.require(
        any(c["name"] == "check-identity" for c in pod.get("initContainers", [])),
        "decider: the check-identity init container must guard pods on new volumes",
    )
    for probe, path in [("startupProbe", "/healthz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = decider.get(probe, {}).get("httpGet", {})
        findings.require(get.get("path") == path and get.get("port") == "http", f"decider: {probe} must be GET {path} on port http")
    http_port = next((p["containerPort"] for p in decider.get("ports", []) if p["name"] == "http"), None)
    findings.require(
        (flag(args, "--http") or "").endswith(f":{http_port}"),
        f"decider: --http {flag(args, '--http')} is not the container port named http ({http_port})",
    )
    # Opening a large store happens before the HTTP port answers: the startup probe must
    # wait minutes, not the default 30 s, or the kubelet restarts it over and over.
    startup = decider.get("startupProbe", {})
    startup_budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    findings.require(startup_budget >= 300, f"decider: the startupProbe gives up after {startup_budget}s; allow at least 300s")

    sts_name = sts["metadata"]["name"]
    own = [name for name, _ in members if name.rsplit("-", 1)[0] == sts_name]
    replicas = spec["replicas"]
    facts.update(
        statefulset=sts_name,
        replicas=replicas,
        initial_cluster=sorted(f"{n}={a}" for n, a in members),
        own_founders=own,
        advertise=advertise,
    )
    findings.require(
        all(int(name.rsplit("-", 1)[1]) < replicas for name in own),
        f"decider: founding members {own} beyond replicas {replicas}",
    )

    # A PDB that keeps a quorum of the voters this release can see.
    pdbs = find(objects, "PodDisruptionBudget", "decider")
    if values.get("decider", {}).get("pdb", {}).get("enabled", True):
        findings.require(len(pdbs) == 1, "decider: no PodDisruptionBudget")
        if pdbs:
            max_unavailable = pdbs[0]["spec"].get("maxUnavailable")
            voters = len(members)
            if len(own) == len(members):
                promote = values.get("decider", {}).get("join", {}).get("promote", True)
                voters += (replicas - len(own)) if promote else 0
                findings.require(
                    isinstance(max_unavailable, int) and voters - max_unavailable >= voters // 2 + 1,
                    f"decider PDB: maxUnavailable {max_unavailable} would break the quorum of {voters} voters",
                )
            else:
                findings.require(max_unavailable == 1, f"decider PDB across releases: maxUnavailable {max_unavailable}, expected 1")

    edges = find(objects, "Deployment", "edge")
    if edges:
        edge_pod = edges[0]["spec"]["template"]["spec"]
        edge = container(edge_pod, "edge")
        config_maps = {c["metadata"]["name"]: c for c in find(objects, "ConfigMap")}
        config_volume = next(v for v in edge_pod["volumes"] if v["name"] == "config")
        edge_toml = config_maps[config_volume["configMap"]["name"]]["data"]["edge.toml"]
        grace = _toml_int(edge_toml, "shutdown_grace_secs", 30)
        sleep = int(edge["lifecycle"]["preStop"]["exec"]["command"][1])
        period = edge_pod.get("terminationGracePeriodSeconds", 30)
        findings.require(
            period > sleep + grace,
            f"edge: terminationGracePeriodSeconds {period} must exceed preStop {sleep}s + shutdown_grace_secs {grace}",
        )
        # Readiness: /readyz (able to enforce) unless the edge fails open, where a decider
        # outage must not take every edge out of the Service; an explicit value wins.
        fail_open = _toml_value(edge_toml, "accept_without_verdict") == "true"
        wanted = values.get("edge", {}).get("readinessProbe", {}).get("path") or ("/healthz" if fail_open else "/readyz")
        for probe, path in [("readinessProbe", wanted), ("livenessProbe", "/healthz")]:
            get = edge.get(probe, {}).get("httpGet", {})
            findings.require(get.get("path") == path and get.get("port") == "http", f"edge: {probe} must be GET {path} on port http")
        smtp_port = next(p["containerPort"] for p in edge["ports"] if p["name"] == "smtp")
        findings.require(smtp_port > 1024, "edge: the SMTP container port must be unprivileged (non-root)")
        edge_services = [s for s in find(objects, "Service", "edge") if s["metadata"]["name"] == edges[0]["metadata"]["name"]]
        findings.require(
            bool(edge_services) and any(p["port"] == 25 and p["targetPort"] == "smtp" for p in edge_services[0]["spec"]["ports"]),
            "edge: the Service must map port 25 to the smtp container port",
        )
        deciders = flag(edge["args"], "--deciders") or ""
        if not values.get("edge", {}).get("deciders"):
            findings.require(
                deciders.startswith(f"{spec['serviceName']}.{release.namespace}.svc."),
                f"edge: --deciders should be the headless Service, is {deciders!r}",
            )
        findings.require(bool(find(objects, "HorizontalPodAutoscaler", "edge")) or not values.get("edge", {}).get("autoscaling", {}).get("enabled", True), "edge: no HPA")
    return facts


# Transport security (tls.* in values.yaml): the role each component's certificate must
# carry, the file each flag names in a mounted Secret, and what a cert-manager Certificate
# may say (cert-manager.io/v1 spec fields; its CRD is not validated, see CRD_KINDS).
TLS_ROLES = {"decider": "peer", "edge": "edge", "policy": "admin", "test": "viewer", "backup": "admin"}
TLS_FILES = {"--cert": "tls.crt", "--key": "tls.key", "--ca": "ca.crt"}
CERTIFICATE_SPEC_FIELDS = {
    "secretName", "secretTemplate", "commonName", "literalSubject", "subject", "duration", "renewBefore",
    "renewBeforePercentage", "dnsNames", "ipAddresses", "uris", "otherNames", "emailAddresses", "usages",
    "privateKey", "issuerRef", "isCA", "keystores", "revisionHistoryLimit", "additionalOutputFormats",
    "nameConstraints", "encodeUsagesInRequest",
}
CERTIFICATE_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth",
    "client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel",
    "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}
# Where the chart's scripts call `ratchet ctl`: outside a quoted string (log messages that
# tell an operator what to type do not count). Each must be the script's ctl() wrapper,
# which adds --insecure when the chart sets CTL_INSECURE (tls.enabled false).
RATCHET_CTL = re.compile(r"ratchet ctl\b")
CTL_WRAPPER_CALLS = ('ratchet ctl --insecure "$@"', 'ratchet ctl "$@"')
# The environment through which ratchet (and so every ratchet ctl of a script) takes its
# certificate, and the chart's switch for --insecure in scripts.
TLS_ENV = {"RATCHET_CERT": "--cert", "RATCHET_KEY": "--key", "RATCHET_CA": "--ca"}


def tls_mode(values: dict[str, Any]) -> str:
    tls = values.get("tls", {}) or {}
    if not tls.get("enabled", True):
        return "off (--insecure)"
    return "mTLS, cert-manager" if (tls.get("certManager", {}) or {}).get("enabled", False) else "mTLS, Secrets"


def tls_secret_name(release: Release, values: dict[str, Any], component: str) -> str:
    named = ((values.get("tls", {}) or {}).get("secrets", {}) or {}).get(component)
    fullname = (values.get("fullnameOverride") or release.name)[:40].rstrip("-")
    return named or f"{fullname}-{component}-mtls"


CTL_FUNCTION = re.compile(r"^([ \t]*)ctl\(\) \{\n.*?^\1\}$", re.MULTILINE | re.DOTALL)


def bare_ctl_calls(script: str) -> list[str]:
    """What is wrong with how a shell script runs `ratchet ctl`: a call other than through
    its ctl() wrapper, or a wrapper that does not add --insecure exactly when CTL_INSECURE
    is true (the wrapper is run, with a stand-in for ratchet, to find out)."""
    bare = []
    calls = 0
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        for match in RATCHET_CTL.finditer(line):
            if line[: match.start()].count('"') % 2 == 0:
                calls += 1
                if not line[match.start() :].strip().startswith(CTL_WRAPPER_CALLS):
                    bare.append(stripped)
    if not calls:
        return bare
    wrapper = CTL_FUNCTION.search(script)
    if wrapper is None:
        return bare + ["(no ctl() wrapper)"]
    stand_in = 'ratchet() { printf "%s\\n" "$*"; }\n'
    for insecure, expected in [("true", "ctl --insecure cluster status"), ("", "ctl cluster status")]:
        run = subprocess.run(
            ["sh", "-c", stand_in + wrapper.group(0) + "\nctl cluster status"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **({"CTL_INSECURE": insecure} if insecure else {})},
            capture_output=True,
            text=True,
        )
        if run.stdout.strip() != expected:
            state = "CTL_INSECURE=true" if insecure else "without CTL_INSECURE"
            bare.append(f"(its ctl() wrapper, {state}, runs `ratchet {run.stdout.strip()}`, expected `ratchet {expected}`)")
    return bare


def check_tls(release: Release, values: dict[str, Any], objects, notes: str, findings: Findings) -> None:
    """tls.enabled: every container of the decider, edge, hook Job, backup and test pods gives its
    ratchet process the component's certificate: --cert, --key and --ca (in its args, or as
    RATCHET_CERT, RATCHET_KEY and RATCHET_CA, which ratchet reads, for the containers whose
    scripts run `ratchet ctl`) naming tls.crt,
    tls.key and ca.crt of the component's Secret, mounted in that container; with
    cert-manager, a Certificate with the component's role makes that Secret. tls.enabled
    false: --insecure instead (CTL_INSECURE=true for scripts), no certificates, and
    NOTES.txt says so. The deciders' probes
    and scrapes follow: HTTPS with TLS, HTTP without; the edges' stay HTTP."""
    tls = values.get("tls", {}) or {}
    enabled = tls.get("enabled", True)
    cert_manager = enabled and (tls.get("certManager", {}) or {}).get("enabled", False)
    trust_domain = tls.get("trustDomain", "ratchet.local")

    pods: list[tuple[str, str, dict[str, Any]]] = []  # (component, object, pod spec)
    for kind, component in [("StatefulSet", "decider"), ("Deployment", "edge"), ("Job", "policy")]:
        for workload in find(objects, kind, component):
            pods.append((component, f"{kind}/{workload['metadata']['name']}", workload["spec"]["template"]["spec"]))
    for cronjob in find(objects, "CronJob", "backup"):
        pods.append(("backup", f"CronJob/{cronjob['metadata']['name']}", backup_pod(cronjob)))
    for pod in find(objects, "Pod", "test"):
        pods.append(("test", f"Pod/{pod['metadata']['name']}", pod["spec"]))
    findings.require(any(c == "decider" for c, _, _ in pods), "tls: no decider pods to check")

    certificates = {c["spec"].get("secretName"): c for c in find(objects, "Certificate")}
    secrets_used: dict[str, str] = {}
    for component, where, pod in pods:
        volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
        expected_secret = tls_secret_name(release, values, component)
        for spec in (pod.get("initContainers", []) or []) + pod["containers"]:
            name = f"{where} container {spec['name']}"
            env = {e["name"]: e.get("value") for e in spec.get("env", []) or []}
            # What the container's ratchet processes get: flags in its args, and the
            # environment (RATCHET_* for any ratchet, CTL_INSECURE for the scripts' ctl).
            tokens = [str(a) for a in spec.get("args", []) or []]
            for variable, option in TLS_ENV.items():
                if variable in env:
                    tokens += [option, str(env[variable])]
            if env.get("CTL_INSECURE") == "true":
                tokens.append("--insecure")
            source = "args and env"
            # An inline script (the helm test) must run ratchet ctl through its wrapper.
            for text in [str(a) for a in (spec.get("command", []) or []) + (spec.get("args", []) or [])]:
                for line in bare_ctl_calls(text):
                    findings.fail(f"tls: {name} runs ratchet ctl without the CTL_INSECURE wrapper: {line}")
            if not enabled:
                findings.require("--insecure" in tokens, f"tls off: {name} lacks --insecure ({source})")
                present = [f for f in TLS_FILES if f in tokens]
                findings.require(not present, f"tls off: {name} still has {present} ({source})")
                continue
            findings.require("--insecure" not in tokens, f"tls: {name} has --insecure although tls.enabled ({source})")
            mounts = spec.get("volumeMounts", []) or []
            for option, file in TLS_FILES.items():
                path = flag(tokens, option)
                if path is None:
                    findings.fail(f"tls: {name} lacks {option} ({source})")
                    continue
                mount = next((m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
                if mount is None:
                    findings.fail(f"tls: {name} {option} {path} is not in any of its volume mounts")
                    continue
                volume = volumes.get(mount["name"], {})
                secret = volume.get("secret")
                if secret is None:
                    findings.fail(f"tls: {name} {option} {path} is on volume {mount['name']}, which is not a Secret")
                    continue
                relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
                items = secret.get("items")
                key = next((i["key"] for i in items if i["path"] == relative), None) if items else relative
                findings.require(
                    key == file,
                    f"tls: {name} {option} {path} is key {key!r} of Secret {secret.get('secretName')}, expected {file}",
                )
                findings.require(
                    secret.get("secretName") == expected_secret,
                    f"tls: {name} {option} reads Secret {secret.get('secretName')}, expected {expected_secret}",
                )
                findings.require("subPath" not in mount, f"tls: {name} mounts its certificate with subPath: renewals would never reach it")
                secrets_used[secret.get("secretName")] = component
        if not enabled:
            secret_volumes = [v["name"] for v in volumes.values() if "secret" in v and v["secret"].get("secretName") == expected_secret]
            findings.require(not secret_volumes, f"tls off: {where} still mounts {secret_volumes}")

    # cert-manager: one Certificate per Secret in use, for the component's role.
    if cert_manager:
        for secret, component in sorted(secrets_used.items()):
            certificate = certificates.get(secret)
            if certificate is None:
                findings.fail(f"tls: no cert-manager Certificate makes Secret {secret} ({component})")
                continue
            spec = certificate["spec"]
            name = f"Certificate/{certificate['metadata']['name']}"
            unknown = set(spec) - CERTIFICATE_SPEC_FIELDS
            findings.require(not unknown, f"tls: {name} has fields cert-manager.io/v1 does not know: {sorted(unknown)}")
            spiffe = [u for u in spec.get("uris", []) or [] if u.startswith("spiffe://")]
            role = TLS_ROLES[component]
            findings.require(
                len(spiffe) == 1 and re.fullmatch(rf"spiffe://{re.escape(trust_domain)}/{role}/[^/]+", spiffe[0]) is not None,
                f"tls: {name} must name exactly one spiffe://{trust_domain}/{role}/NAME, has {spiffe}",
            )
            usages = set(spec.get("usages", []) or [])
            findings.require(not usages - CERTIFICATE_USAGES, f"tls: {name} has unknown usages {sorted(usages - CERTIFICATE_USAGES)}")
            # ratchet checks its own certificate as a server certificate, and presents it as a client.
            findings.require({"server auth", "client auth"} <= usages, f"tls: {name} needs usages server auth and client auth, has {sorted(usages)}")
            findings.require(bool((spec.get("issuerRef") or {}).get("name")), f"tls: {name} has no issuerRef.name")
        extra = sorted(set(certificates) - set(secrets_used))
        findings.require(not extra, f"tls: Certificates for Secrets that no pod mounts: {extra}")
    else:
        findings.require(not certificates, f"tls: Certificates rendered although cert-manager is off: {sorted(certificates)}")

    # Probes: the decider's HTTP port is HTTPS with a certificate; the edge's stays HTTP.
    scheme = "HTTPS" if enabled else "HTTP"
    for component, where, pod in pods:
        if component not in ("decider", "edge"):
            continue
        main = container(pod, component)
        wanted = scheme if component == "decider" else "HTTP"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = (main.get(probe) or {}).get("httpGet")
            if get is not None:
                findings.require(get.get("scheme", "HTTP") == wanted, f"tls: {where} {probe} scheme {get.get('scheme', 'HTTP')}, expected {wanted}")
    for monitor in find(objects, "ServiceMonitor"):
        component = monitor["metadata"]["labels"].get("app.kubernetes.io/component")
        wanted = ("https" if enabled else "http") if component == "decider" else "http"
        for endpoint in monitor["spec"].get("endpoints", []):
            findings.require(
                endpoint.get("scheme", "http") == wanted,
                f"tls: ServiceMonitor/{monitor['metadata']['name']} scrapes {endpoint.get('scheme', 'http')}, expected {wanted}",
            )
            if wanted == "https":
                findings.require(bool(endpoint.get("tlsConfig")), f"tls: ServiceMonitor/{monitor['metadata']['name']} scrapes https without a tlsConfig")

    # Scripts in the ConfigMaps: every ratchet ctl they run goes through the wrapper.
    for config_map in find(objects, "ConfigMap"):
        for key, text in (config_map.get("data") or {}).items():
            if key.endswith(".sh"):
                for line in bare_ctl_calls(text):
                    findings.fail(f"tls: {key} runs ratchet ctl without the CTL_INSECURE wrapper: {line}")

    if not enabled:
        findings.require("WARNING: tls.enabled is false" in notes, "tls off: NOTES.txt does not warn about plaintext")


def backup_pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    """The pod spec that each run of a CronJob gets."""
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def check_backup(values: dict[str, Any], objects, findings: Findings) -> None:
    """backup.enabled: one CronJob whose runs never overlap, writing to BACKUP_DIR on a
    claim that outlives the release (backup.persistence.existingClaim, or one the chart
    makes with helm.sh/resource-policy keep), keeping at least one snapshot, its pod
    hardened exactly like the deciders'. Disabled: no CronJob and no backup claim."""
    backup = values.get("backup", {}) or {}
    cronjobs = find(objects, "CronJob", "backup")
    claims = {c["metadata"]["name"]: c for c in find(objects, "PersistentVolumeClaim", "backup")}
    if not backup.get("enabled", False):
        findings.require(not cronjobs and not claims, "backup: rendered although backup.enabled is false")
        return
    findings.require(len(cronjobs) == 1, f"backup: expected one CronJob, found {len(cronjobs)}")
    if not cronjobs:
        return
    spec = cronjobs[0]["spec"]
    findings.require(spec.get("concurrencyPolicy") == "Forbid", "backup: concurrencyPolicy must be Forbid (runs share the files)")
    pod = backup_pod(cronjobs[0])
    main = container(pod, "backup")
    env = {e["name"]: e.get("value") for e in main.get("env", []) or []}
    findings.require(int(env.get("KEEP") or 0) >= 1, f"backup: KEEP {env.get('KEEP')!r} would delete every snapshot")
    mount = next((m for m in main.get("volumeMounts", []) if m["mountPath"] == env.get("BACKUP_DIR")), None)
    volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), {})
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    existing = (backup.get("persistence", {}) or {}).get("existingClaim")
    if existing:
        findings.require(claim == existing, f"backup: BACKUP_DIR is on {claim!r}, not the existing claim {existing!r}")
        findings.require(not claims, f"backup: claims {sorted(claims)} rendered although existingClaim is set")
    else:
        findings.require(claim in claims, f"backup: BACKUP_DIR {env.get('BACKUP_DIR')!r} is on {claim!r}, not a claim the chart makes")
        kept = claims.get(claim, {}).get("metadata", {}).get("annotations", {}).get("helm.sh/resource-policy")
        findings.require(kept == "keep", f"backup: claim {claim} lacks helm.sh/resource-policy: keep (helm uninstall would delete the backups)")
    statefulsets = find(objects, "StatefulSet", "decider")
    if statefulsets:
        decider_pod = statefulsets[0]["spec"]["template"]["spec"]
        findings.require(pod.get("securityContext") == decider_pod.get("securityContext"), "backup: pod securityContext differs from the deciders'")
        findings.require(
            main.get("securityContext") == container(decider_pod, "decider").get("securityContext"),
            "backup: container securityContext differs from the deciders'",
        )
    findings.require(pod.get("automountServiceAccountToken") is False, "backup: the pod must not mount a service account token")


def _toml_value(text: str, key: str) -> str | None:
    """The raw value of a top-level `key = value` line (the chart writes flat TOML)."""
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def _toml_int(text: str, key: str, default: int) -> int:
    value = _toml_value(text, key)
    return int(value) if value is not None and value.isdigit() else default


def check_layout(value_set: ValueSet, facts: dict[str, dict[str, Any]]) -> list[str]:
    """A set of releases must describe one group: the same founders everywhere, each one
    a pod of some release, at the address that pod advertises."""
    failures = []
    lists = {name: tuple(f["initial_cluster"]) for name, f in facts.items() if f}
    first_release, first = next(iter(lists.items()), ("", ()))
    for name, members in lists.items():
        lacking, extra = set(first) - set(members), set(members) - set(first)
        if lacking or extra:
            failures.append(
                f"{value_set.name}: --initial-cluster of {name} differs from {first_release}'s: "
                f"lacks {sorted(lacking)}, adds {sorted(extra)}"
            )
    pods = {}
    for f in facts.values():
        for ordinal in range(f.get("replicas", 0)):
            name = f"{f['statefulset']}-{ordinal}"
            pods[name] = f["advertise"].replace("$(POD_NAME)", name)
    for entry in next(iter(lists.values()), ()):
        name, address = entry.split("=", 1)
        if name not in pods:
            failures.append(f"{value_set.name}: founding member {name} is no pod of any release in the set")
        elif pods[name] != address:
            failures.append(f"{value_set.name}: founding member {name} is listed at {address} but advertises {pods[name]}")
    return failures


# --------------------------------------------------------------------------- whole-chart checks

Rendered = dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]  # (value set, release) -> objects


def render_all(chart: helm.Chart) -> Rendered:
    rendered: Rendered = {}
    for value_set in VALUE_SETS:
        for release in value_set.releases:
            values = load_values(release.values_files)
            rendered[(value_set.name, release.name)] = objects_of(render(chart, release.name, release.namespace, values))
    return rendered


def check_alerts(rendered: Rendered, stage: Findings) -> str:
    """promtool on the alerts: `check rules` on every rendered PrometheusRule, and the unit
    tests of RULES_TEST on the rules RULES_RELEASE renders."""
    promtool = shutil.which("promtool")
    if promtool is None:
        stage.fail("promtool is missing: run deploy/install-deps.sh test (Debian package prometheus)")
        return "promtool missing"
    rules = {key: found[0] for key, objects in rendered.items() if (found := find(objects, "PrometheusRule"))}
    if RULES_RELEASE not in rules:
        stage.fail(f"{'/'.join(RULES_RELEASE)} renders no PrometheusRule, so {RULES_TEST.name} has nothing to test")
        return "no rules rendered"
    with tempfile.TemporaryDirectory(prefix="ratchet-rules-") as tmp:
        for (value_set, release), rule in sorted(rules.items()):
            name = f"{value_set}-{release}.yaml"
            (Path(tmp) / name).write_text(yaml.safe_dump(rule["spec"], sort_keys=False, width=1000))
            run = subprocess.run([promtool, "check", "rules", name], cwd=tmp, capture_output=True, text=True)
            if run.returncode != 0:
                stage.fail(f"promtool check rules ({value_set}/{release}):\n{(run.stdout + run.stderr).rstrip()}")
        # The test file names its rules file rules.yaml, relative to itself.
        shutil.copy(Path(tmp) / f"{RULES_RELEASE[0]}-{RULES_RELEASE[1]}.yaml", Path(tmp) / "rules.yaml")
        shutil.copy(RULES_TEST, Path(tmp) / RULES_TEST.name)
        run = subprocess.run([promtool, "test", "rules", RULES_TEST.name], cwd=tmp, capture_output=True, text=True)
        if run.returncode != 0:
            stage.fail(f"promtool test rules {RULES_TEST.relative_to(CHART)}:\n{(run.stdout + run.stderr).rstrip()}")
    alerts = sum(len(group.get("rules", [])) for group in rules[RULES_RELEASE]["spec"]["groups"])
    tests = len(yaml.safe_load(RULES_TEST.read_text()).get("tests", []))
    return f"{alerts} alerts, promtool check rules on {len(rules)} release(s), {tests} unit tests ({RULES_TEST.relative_to(CHART)})"


def dig(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def immutable_fields(rendered: Rendered) -> dict[str, dict[str, dict[str, Any]]]:
    """"value set/release" -> "Kind/name" -> field -> its rendered value (null: not set)."""
    fields: dict[str, dict[str, dict[str, Any]]] = {}
    for (value_set, release), objects in sorted(rendered.items()):
        release_fields = {}
        for _, document in objects:
            kind = document.get("kind")
            if kind in IMMUTABLE_FIELDS:
                release_fields[f"{kind}/{document['metadata']['name']}"] = {f: dig(document, f) for f in IMMUTABLE_FIELDS[kind]}
        fields[f"{value_set}/{release}"] = dict(sorted(release_fields.items()))
    return fields


def immutable_differences(current: dict, recorded: dict) -> list[tuple[bool, str]]:
    """(breaking, message) for each difference from the record. Additions (a new release or
    object) are not breaking; a changed field, or an object gone, is."""
    differences = []
    before_all = recorded.get("releases", {})
    for release in sorted(set(before_all) | set(current)):
        if release not in current:
            differences.append((False, f"{release}: recorded, but no longer a release that check.py renders"))
            continue
        if release not in before_all:
            differences.append((False, f"{release}: a new release, not recorded yet"))
            continue
        before, after = before_all[release], current[release]
        for name in sorted(set(before) | set(after)):
            if name not in before:
                differences.append((False, f"{release}: {name} is new, not recorded yet"))
            elif name not in after:
                consequence = " (a new name is a new StatefulSet: new, empty volumes)" if name.startswith("StatefulSet/") else ""
                differences.append((True, f"{release}: {name} is no longer rendered: renamed or removed{consequence}"))
            else:
                for field in sorted(set(before[name]) | set(after[name])):
                    for where, old, new in leaf_differences(before[name].get(field), after[name].get(field), field):
                        differences.append((True, f"{release}: {name} {where}: {old} -> {new}"))
    return differences


ABSENT = object()


def leaf_differences(old: Any, new: Any, where: str) -> list[tuple[str, str, str]]:
    """(path, old, new) for each value that differs between two JSON-like values."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            difference
            for key in sorted(set(old) | set(new))
            for difference in leaf_differences(old.get(key, ABSENT), new.get(key, ABSENT), f"{where}.{key}")
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [difference for i, (a, b) in enumerate(zip(old, new)) for difference in leaf_differences(a, b, f"{where}[{i}]")]
    show = lambda value: "(not set)" if value is ABSENT or value is None else json.dumps(value, sort_keys=True)  # noqa: E731
    return [(where, show(old), show(new))]


def breaking_part(version: str) -> tuple[int, ...]:
    """The part of a SemVer version that an incompatible release raises, as Cargo reads
    SemVer: the major version, or for 0.y.z the minor, or for 0.0.z the patch."""
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"chart version {version!r} is not SemVer")
    major, minor, patch = (int(part) for part in match.groups())
    return (major,) if major else (0, minor) if minor else (0, 0, patch)


IMMUTABLE_HOWTO = f"""\
Kubernetes does not change these fields of an existing object: `helm upgrade` from a release
of this chart would fail ("spec: Forbidden: updates to statefulset spec for fields other
than ..."), and the only way on is deleting the object by hand. If the change is deliberate:
  1. raise the chart's version in Chart.yaml to a new major one (for 0.y.z, a new minor;
     the part Cargo's SemVer reads as incompatible),
  2. say in helm/ratchet/README.md how to upgrade across it (e.g. `kubectl delete
     statefulset <name> --cascade=orphan` before `helm upgrade`),
  3. run `python3 helm/check.py immutable --update` and commit
     {IMMUTABLE_FILE.relative_to(CHART.parent.parent)} with the change."""


def check_immutable(rendered: Rendered, stage: Findings) -> str:
    """The upgrade check: the immutable fields rendered now against IMMUTABLE_FILE."""
    current = immutable_fields(rendered)
    objects = sum(len(release) for release in current.values())
    name = IMMUTABLE_FILE.relative_to(CHART)
    if not IMMUTABLE_FILE.exists():
        stage.fail(f"{name} is missing: run `python3 helm/check.py immutable --update` and commit it")
        return "no record"
    recorded = json.loads(IMMUTABLE_FILE.read_text())
    differences = immutable_differences(current, recorded)
    breaking = [message for is_breaking, message in differences if is_breaking]
    additions = [message for is_breaking, message in differences if not is_breaking]
    for message in breaking:
        stage.fail(message)
    if breaking:
        stage.fail(IMMUTABLE_HOWTO)
    for message in additions:
        stage.fail(message)
    if additions and not breaking:
        stage.fail(f"{name} lacks new objects only (no chart version bump needed): run `python3 helm/check.py immutable --update` and commit it")
    return f"immutable fields of {objects} objects in {len(current)} releases vs {name} (recorded at chart {recorded.get('chartVersion')})"


def update_immutable() -> int:
    """`check.py immutable --update`: records the immutable fields as rendered now. A change
    to a recorded field needs the chart's version raised incompatibly since the record."""
    chart = helm.Chart.load(str(CHART))
    current = immutable_fields(render_all(chart))
    name = IMMUTABLE_FILE.relative_to(CHART.parent.parent)
    if IMMUTABLE_FILE.exists():
        recorded = json.loads(IMMUTABLE_FILE.read_text())
        breaking = [message for is_breaking, message in immutable_differences(current, recorded) if is_breaking]
        if breaking and not breaking_part(chart.version) > breaking_part(recorded["chartVersion"]):
            for message in breaking:
                print(f"  {message}", file=sys.stderr)
            print(
                f"helm/check.py: not updating {name}: the changes above break `helm upgrade`, and the chart's "
                f"version {chart.version} is not an incompatible bump of {recorded['chartVersion']} (recorded).\n{IMMUTABLE_HOWTO}",
                file=sys.stderr,
            )
            return 1
        if not immutable_differences(current, recorded):
            print(f"{name}: up to date")
            return 0
    record = {
        "comment": [
            "Fields that Kubernetes does not change in place, as helm/check.py renders them for",
            "each release of its value sets. check.py fails when a change alters one; update with",
            "`python3 helm/check.py immutable --update`, which needs an incompatible chart version",
            "bump for a changed or removed field (see helm/ratchet/README.md, Upgrades).",
        ],
        "chartVersion": chart.version,
        "fields": {kind: paths for kind, paths in IMMUTABLE_FIELDS.items()},
        "releases": current,
    }
    IMMUTABLE_FILE.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: recorded {sum(len(r) for r in current.values())} objects of {len(current)} releases at chart {chart.version}")
    return 0


def documented_skips() -> set[str]:
    """Check ids in the chart README's table of accepted checkov findings."""
    return set(re.findall(r"^\|\s*`?(CKV2?_K8S_\d+)`?\s*\|", CHART_README.read_text(), re.MULTILINE))


def check_checkov(rendered: Rendered, stage: Findings) -> str:
    """checkov's Kubernetes checks over every rendered object; findings listed in
    CHECKOV_SKIPS (each explained in the chart README) are accepted."""
    if not CHECKOV.exists():
        stage.fail(f"checkov is missing ({CHECKOV}): run deploy/install-deps.sh test, which installs it in that virtualenv")
        return "checkov missing"
    skips = yaml.safe_load(CHECKOV_SKIPS.read_text()) or []
    listed = {skip["id"] for skip in skips}
    documented = documented_skips()
    for check_id in sorted(listed - documented):
        stage.fail(f"{CHECKOV_SKIPS.name} skips {check_id}, but helm/ratchet/README.md does not say why")
    for check_id in sorted(documented - listed):
        stage.fail(f"helm/ratchet/README.md explains skipping {check_id}, which {CHECKOV_SKIPS.name} does not skip")
    with tempfile.TemporaryDirectory(prefix="ratchet-checkov-") as tmp:
        for (value_set, release), objects in rendered.items():
            directory = Path(tmp) / value_set / release
            directory.mkdir(parents=True)
            for index, (_, document) in enumerate(objects):
                path = directory / f"{index:02d}-{document['kind']}-{document['metadata']['name']}.yaml"
                path.write_text(yaml.safe_dump(document, sort_keys=False))
        run = subprocess.run(
            [str(CHECKOV), "--directory", tmp, "--framework", "kubernetes", "--skip-download", "--output", "json", "--compact"],
            capture_output=True,
            text=True,
        )
        try:
            reports = json.loads(run.stdout)
        except json.JSONDecodeError:
            stage.fail(f"checkov exited {run.returncode} without a JSON report: {(run.stderr or run.stdout).strip()[-2000:]}")
            return "checkov failed"
    reports = reports if isinstance(reports, list) else [reports]
    passed = accepted = failed = 0
    used: set[tuple[str, str]] = set()
    for report in reports:
        passed += report.get("summary", {}).get("passed", 0)
        for finding in report.get("results", {}).get("failed_checks", []):
            kind, _, name = finding["resource"].partition(".")
            name = name.rpartition(".")[2] if "." in name else name
            resource = f"{kind}/{name}"
            release = "/".join(Path(finding["file_path"]).parts[1:3])
            match = next(
                ((skip["id"], pattern) for skip in skips for pattern in skip["resources"] if skip["id"] == finding["check_id"] and fnmatch.fnmatchcase(resource, pattern)),
                None,
            )
            if match:
                used.add(match)
                accepted += 1
            else:
                failed += 1
                stage.fail(f"{finding['check_id']} ({finding['check_name']}): {resource} in {release}")
    for skip in skips:
        for pattern in skip["resources"]:
            if (skip["id"], pattern) not in used:
                stage.fail(f"{CHECKOV_SKIPS.name} accepts {skip['id']} for {pattern}, which no longer fails: remove it (and its README row)")
    version = subprocess.run([str(CHECKOV), "--version"], capture_output=True, text=True).stdout.strip()
    return f"checkov {version}: {passed} passed, {accepted} accepted ({CHECKOV_SKIPS.relative_to(CHART)}), {failed} failed"


def check_all() -> int:
    chart = helm.Chart.load(str(CHART))
    print(f"chart {chart.name} {chart.version} (Helm SDK {helm.helm_sdk_version()}), Kubernetes schemas {KUBE_VERSION}")
    rows = []
    failed = 0
    notes: dict[str, list[str]] = {}  # note -> where, printed once at the end
    rendered: Rendered = {}
    for value_set in VALUE_SETS:
        facts = {}
        for release in value_set.releases:
            findings = Findings()
            lint_verdict = "-"
            tls_verdict = "-"
            objects: list = []
            validated = skipped = 0
            try:
                values = load_values(release.values_files)
                lint_verdict = lint(release, values, findings)
                texts = render(chart, release.name, release.namespace, values)
                objects = objects_of(texts)
                rendered[(value_set.name, release.name)] = objects
                validated, skipped = validate(objects, findings)
                facts[release.name] = check_invariants(release, values, objects, findings)
                tls_verdict = tls_mode(values)
                notes_text = next((text for path, text in texts.items() if path.endswith("/NOTES.txt")), "")
                check_tls(release, values, objects, notes_text, findings)
                check_backup(values, objects, findings)
            except helm.HelmError as error:
                findings.fail(f"{type(error).__name__}: {error}")
            except (KeyError, StopIteration, ValueError) as error:
                findings.fail(f"rendered objects lack what the checks expect: {error!r}")
            verdict = "FAIL" if findings.failures else "ok"
            failed += bool(findings.failures)
            rows.append((value_set.name, release.name, ", ".join(release.values_files), lint_verdict, len(objects), validated, skipped, tls_verdict, verdict))
            for note in findings.notes:
                notes.setdefault(note, []).append(f"{value_set.name}/{release.name}")
            for failure in findings.failures:
                print(f"  FAIL  {value_set.name}/{release.name}: {failure}")
        if len(value_set.releases) > 1:
            layout_failures = check_layout(value_set, facts)
            for failure in layout_failures:
                print(f"  FAIL  {failure}")
            failed += bool(layout_failures)
            rows.append((value_set.name, "(layout)", f"{len(value_set.releases)} releases, one group", "-", "-", "-", "-", "-", "FAIL" if layout_failures else "ok"))

    for note, where in notes.items():
        print(f"  note  {note} ({', '.join(where) if len(where) < 3 else f'{len(where)} releases'})")
    header = ("value set", "release", "values", "lint", "objects", "valid", "CRD", "tls", "result")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    print()
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    releases = sum(1 for row in rows if row[1] != "(layout)")

    # Checks of the chart as a whole, over what the releases above rendered.
    stages = []
    if not failed:
        for name, run in [
            ("alerts", lambda stage: check_alerts(rendered, stage)),
            ("upgrade", lambda stage: check_immutable(rendered, stage)),
            ("checkov", lambda stage: check_checkov(rendered, stage)),
        ]:
            stage = Findings()
            detail = run(stage)
            for failure in stage.failures:
                print(f"  FAIL  {name}: {failure}")
            failed += bool(stage.failures)
            stages.append((name, detail, "FAIL" if stage.failures else "ok"))
    print()
    for name, detail, verdict in stages:
        print(f"{name:<8}  {verdict:<4}  {detail}")
    print()
    if failed:
        print(f"chart check FAILED: {failed} of {len(rows) + len(stages)} rows and checks failed")
        return 1
    print(
        f"chart check ok: {len(VALUE_SETS)} value sets, {releases} releases linted, rendered and validated; "
        f"{', '.join(name for name, _, _ in stages)} ok"
    )
    return 0


# --------------------------------------------------------------------------- pods


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values: a defined variable is
    replaced, an undefined one is left as written, and $$ is a literal $."""
    out = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2 : end]
                out.append(env.get(name, text[i : end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def field_ref(path: str, pod: dict[str, Any]) -> str:
    """The downward API's fieldRef for one pod."""
    simple = {
        "metadata.name": pod["name"],
        "metadata.namespace": pod["namespace"],
        "spec.serviceAccountName": pod["serviceAccountName"],
        "spec.nodeName": "node-0",
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    for prefix, source in [("metadata.labels", pod["labels"]), ("metadata.annotations", pod["annotations"])]:
        if path.startswith(prefix + "['") and path.endswith("']"):
            return source.get(path[len(prefix) + 2 : -2], "")
    raise ValueError(f"fieldRef {path} is not supported by check.py")


def resolve_container(spec: dict[str, Any], pod: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    env: dict[str, str] = {}
    for variable in spec.get("env", []) or []:
        if "value" in variable:
            env[variable["name"]] = expand(str(variable["value"]), env)
        elif "fieldRef" in variable.get("valueFrom", {}):
            env[variable["name"]] = field_ref(variable["valueFrom"]["fieldRef"]["fieldPath"], pod)
        elif "configMapKeyRef" in variable.get("valueFrom", {}):
            ref = variable["valueFrom"]["configMapKeyRef"]
            env[variable["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
        else:
            raise ValueError(f"env {variable['name']}: only value, fieldRef and configMapKeyRef are supported")
    return {
        "name": spec["name"],
        "image": spec["image"],
        "securityContext": spec.get("securityContext", {}),
        "command": [expand(str(part), env) for part in spec.get("command", []) or []],
        "args": [expand(str(part), env) for part in spec.get("args", []) or []],
        "env": env,
        "ports": spec.get("ports", []) or [],
        "volumeMounts": spec.get("volumeMounts", []) or [],
    }


def resolve_volumes(spec: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A pod spec's volumes: ConfigMaps with their files, Secrets, claims and emptyDirs by name."""
    volumes: dict[str, Any] = {}
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]].get("data", {})
            items = volume["configMap"].get("items")
            files = {item["path"]: data[item["key"]] for item in items} if items else dict(data)
            volumes[volume["name"]] = {"configMap": {"name": volume["configMap"]["name"], "files": files}}
        elif "emptyDir" in volume:
            volumes[volume["name"]] = {"emptyDir": {}}
        elif "secret" in volume:
            volumes[volume["name"]] = {"secret": {"secretName": volume["secret"]["secretName"]}}
        elif "persistentVolumeClaim" in volume:
            volumes[volume["name"]] = {"persistentVolumeClaim": {"claimName": volume["persistentVolumeClaim"]["claimName"]}}
        else:
            raise ValueError(f"volume {volume['name']}: kind not supported by check.py")
    return volumes


def pods(arguments: argparse.Namespace) -> int:
    chart = helm.Chart.load(str(CHART))
    values = load_values(arguments.values, arguments.set)
    objects = objects_of(render(chart, arguments.release, arguments.namespace, values))
    config_maps = {c["metadata"]["name"]: c for c in find(objects, "ConfigMap")}
    sts = find(objects, "StatefulSet", "decider")[0]
    template = sts["spec"]["template"]
    claims = {claim["metadata"]["name"] for claim in sts["spec"].get("volumeClaimTemplates", [])}
    service = sts["spec"]["serviceName"]
    result = []
    for ordinal in range(sts["spec"]["replicas"]):
        name = f"{sts['metadata']['name']}-{ordinal}"
        pod = {
            "name": name,
            "namespace": arguments.namespace,
            "serviceAccountName": template["spec"].get("serviceAccountName", "default"),
            # What the StatefulSet controller adds to each pod's labels.
            "labels": {
                **template["metadata"].get("labels", {}),
                "statefulset.kubernetes.io/pod-name": name,
                "apps.kubernetes.io/pod-index": str(ordinal),
            },
            "annotations": template["metadata"].get("annotations", {}),
        }
        volumes = {claim: {"persistentVolumeClaim": {"claimName": f"{claim}-{name}"}} for claim in claims}
        volumes.update(resolve_volumes(template["spec"], config_maps))
        result.append(
            {
                "name": name,
                "ordinal": ordinal,
                # <hostname>.<subdomain>.<namespace>.svc.<cluster domain>: the DNS name the
                # headless Service gives a StatefulSet pod.
                "dns": f"{name}.{service}.{arguments.namespace}.svc.{arguments.cluster_domain}",
                "securityContext": template["spec"].get("securityContext", {}),
                "terminationGracePeriodSeconds": template["spec"].get("terminationGracePeriodSeconds", 30),
                # Run to completion, in order, before the containers start.
                "initContainers": [resolve_container(c, pod, config_maps) for c in template["spec"].get("initContainers", [])],
                "containers": [resolve_container(c, pod, config_maps) for c in template["spec"]["containers"]],
                "volumes": volumes,
            }
        )
    # The client Service: the deciders' Service that is not the headless one.
    client = next(s for s in find(objects, "Service", "decider") if s["spec"].get("clusterIP") != "None")
    backup = None
    for cronjob in find(objects, "CronJob", "backup"):
        spec = backup_pod(cronjob)
        name = f"{cronjob['metadata']['name']}-manual"
        pod = {
            "name": name,
            "namespace": arguments.namespace,
            "serviceAccountName": spec.get("serviceAccountName", "default"),
            "labels": cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {}),
            "annotations": {},
        }
        backup = {
            "name": name,
            "containers": [resolve_container(c, pod, config_maps) for c in spec["containers"]],
            "volumes": resolve_volumes(spec, config_maps),
        }
    # A Deployment's pods are alike: one stands for them all (none with edge.enabled false).
    edge = None
    for deployment in find(objects, "Deployment", "edge"):
        spec = deployment["spec"]["template"]["spec"]
        name = f"{deployment['metadata']['name']}-0"
        pod = {
            "name": name,
            "namespace": arguments.namespace,
            "serviceAccountName": spec.get("serviceAccountName", "default"),
            "labels": deployment["spec"]["template"]["metadata"].get("labels", {}),
            "annotations": deployment["spec"]["template"]["metadata"].get("annotations", {}),
        }
        edge = {
            "name": name,
            "securityContext": spec.get("securityContext", {}),
            "initContainers": [resolve_container(c, pod, config_maps) for c in spec.get("initContainers", [])],
            "containers": [resolve_container(c, pod, config_maps) for c in spec["containers"]],
            "volumes": resolve_volumes(spec, config_maps),
        }
    json.dump(
        {
            "statefulset": sts["metadata"]["name"],
            "serviceName": service,
            "clientService": f"{client['metadata']['name']}.{arguments.namespace}.svc.{arguments.cluster_domain}",
            "pods": result,
            "edge": edge,
            "backup": backup,
        },
        sys.stdout,
        indent=2,
    )
    print()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    pods_parser = commands.add_parser("pods", help="print the rendered decider, edge (and backup) pods as JSON")
    pods_parser.add_argument("--values", action="append", default=[], help="a values file (repeatable)")
    pods_parser.add_argument("--set", action="append", default=[], help="KEY=VALUE as helm --set (repeatable)")
    pods_parser.add_argument("--release", default="ratchet")
    pods_parser.add_argument("--namespace", default="ratchet")
    pods_parser.add_argument("--cluster-domain", default="cluster.local")
    immutable_parser = commands.add_parser("immutable", help="record the fields Kubernetes cannot change in place")
    immutable_parser.add_argument("--update", action="store_true", required=True, help=f"rewrite {IMMUTABLE_FILE.name}")
    arguments = parser.parse_args()
    if arguments.command == "immutable":
        return update_immutable()
    if arguments.command == "pods":
        try:
            return pods(arguments)
        except helm.HelmError as error:
            print(f"helm/check.py: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    return check_all()


if __name__ == "__main__":
    sys.exit(main())
