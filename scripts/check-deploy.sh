#!/usr/bin/env bash
# Offline checks of deploy/kubernetes/ (no cluster runs on these machines, so nothing is applied here):
#   - every manifest against the Kubernetes API schemas of a pinned version, strictly (unknown fields fail), with
#     kubernetes-validate (pinned in scripts/requirements-test.txt)
#   - scripts/check-deploy.py: the manifests agree with the binaries' options and with each other
set -euo pipefail
cd "$(dirname "$0")/.."
# The oldest Kubernetes release still supported upstream when this was written; the manifests use only
# stable APIs (apps/v1, policy/v1, autoscaling/v2), so newer clusters accept them too.
kubernetes_version="${KUBERNETES_VERSION:-1.32.0}"
scripts/ensure-test-tools.sh >/dev/null
manifests=()
for file in deploy/kubernetes/*.yaml; do
  [[ "$(basename "$file")" == kustomization.yaml ]] || manifests+=("$file")
done
.venv/bin/kubernetes-validate --quiet --strict --kubernetes-version "$kubernetes_version" "${manifests[@]}"
.venv/bin/python scripts/check-deploy.py deploy/kubernetes
echo "deploy/: ${#manifests[@]} manifests valid for Kubernetes $kubernetes_version (strict)"
