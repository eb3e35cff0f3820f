#!/usr/bin/env python3
"""Consistency checks of deploy/kubernetes/ that a schema cannot make (run by scripts/check-deploy.sh).

- kustomization.yaml lists every manifest in the directory, and nothing else;
- every environment variable the manifests set, and every flag they pass, is one the binary reads
  (docs/configuration.md is generated from the binaries' own definitions and checked by a test);
- each Service, PodDisruptionBudget and HorizontalPodAutoscaler selects or targets a Deployment that exists,
  and every probe and Service port names a port the container declares;
- terminationGracePeriodSeconds outlasts the preStop pause, the drain (TM_SHUTDOWN_GRACE; the standalone gateway
  closes what is still open TM_HTTP_MAX_TIMEOUT after the shutdown began) and the trace flush.
"""
import pathlib
import re
import sys

from ruamel.yaml import YAML

TRACE_FLUSH_SECONDS = 5  # src/telemetry.rs, FLUSH_TIMEOUT: the trace exporter gets at most this long at exit

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/kubernetes")
reference = pathlib.Path("docs/configuration.md").read_text()
errors = []


def binary_options(heading):
    """(env names, flags) documented for one binary: the table rows under its `## heading`."""
    section = reference.split(f"## `{heading}`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z0-9-]+)` \| `([A-Z0-9_]+)` \|", section, re.M)
    return {env for _, env in rows}, {flag for flag, _ in rows}


def seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not match:
        errors.append(f"cannot read the duration {text!r}")
        return 0
    value, unit = int(match[1]), match[2]
    return {"ms": value / 1000, "s": value, "m": value * 60}[unit]


yaml = YAML(typ="safe")
kustomization = yaml.load((root / "kustomization.yaml").read_text())
manifests = sorted(p.name for p in root.glob("*.yaml") if p.name != "kustomization.yaml")
if sorted(kustomization["resources"]) != manifests:
    errors.append(f"kustomization.yaml resources {sorted(kustomization['resources'])} != files {manifests}")

docs = [doc for name in manifests for doc in yaml.load_all((root / name).read_text()) if doc]
by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)

monitor_env, monitor_flags = binary_options("trading-monitor")
gateway_env, gateway_flags = binary_options("trading-gateway")
config_maps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in by_kind.get("ConfigMap", [])}

deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
for name, deployment in deployments.items():
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
        errors.append(f"Deployment {name}: selector does not match its pod labels")
    pod = spec["template"]["spec"]
    for container in pod["containers"]:
        command = container.get("command", ["trading-monitor"])[0]
        known_env, known_flags = (gateway_env, gateway_flags) if command == "trading-gateway" else (
            monitor_env, monitor_flags)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                if ref["name"] not in config_maps:
                    errors.append(f"Deployment {name}: no ConfigMap {ref['name']}")
                env.update(config_maps.get(ref["name"], {}))
        for key in env:
            if key not in known_env:
                errors.append(f"Deployment {name}: {command} reads no variable {key}")
        for arg in container.get("args", []):
            if arg.startswith("--") and arg.split("=")[0] not in known_flags:
                errors.append(f"Deployment {name}: {command} has no flag {arg}")
        ports = {p["name"] for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            handler = container.get(probe, {})
            port = (handler.get("httpGet") or handler.get("tcpSocket") or {}).get("port")
            if port is not None and port not in ports:
                errors.append(f"Deployment {name}: {probe} uses port {port!r}, not one of {sorted(ports)}")
        pause = 0
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if pre_stop[:1] == ["sleep"]:
            pause = int(pre_stop[1])
        if command == "trading-gateway":
            drain = seconds(env.get("TM_HTTP_MAX_TIMEOUT", "15s"))
        else:
            drain = seconds(env.get("TM_SHUTDOWN_GRACE", "10s"))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= pause + drain + TRACE_FLUSH_SECONDS:
            errors.append(f"Deployment {name}: terminationGracePeriodSeconds {grace} does not outlast preStop "
                          f"{pause} s + drain {drain} s + trace flush {TRACE_FLUSH_SECONDS} s")


def selected(selector_labels):
    return [n for n, d in deployments.items()
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector_labels.items())]


for service in by_kind.get("Service", []):
    name = service["metadata"]["name"]
    targets = selected(service["spec"]["selector"])
    if not targets:
        errors.append(f"Service {name}: selects no Deployment")
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        for deployment in targets:
            names = {p["name"] for c in deployments[deployment]["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            if isinstance(target, str) and target not in names:
                errors.append(f"Service {name}: targetPort {target} is not a port of {deployment}")
for pdb in by_kind.get("PodDisruptionBudget", []):
    if not selected(pdb["spec"]["selector"]["matchLabels"]):
        errors.append(f"PodDisruptionBudget {pdb['metadata']['name']}: selects no Deployment")
for hpa in by_kind.get("HorizontalPodAutoscaler", []):
    target = hpa["spec"]["scaleTargetRef"]
    if target["kind"] != "Deployment" or target["name"] not in deployments:
        errors.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: no Deployment {target['name']}")
    elif hpa["spec"]["minReplicas"] < 2:
        errors.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: minReplicas below 2 leaves no spare")

for error in errors:
    print(f"deploy/kubernetes: {error}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"deploy/kubernetes: {len(docs)} resources consistent with the binaries' options and with each other")
