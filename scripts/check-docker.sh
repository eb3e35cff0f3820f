#!/usr/bin/env bash
# Static checks of docker/ (no Docker engine runs on these machines, so nothing is built or started here):
#   - docker/Dockerfile with hadolint (its parser and best-practice rules; pinned in scripts/requirements-test.txt)
#   - docker/compose.yaml against the Compose Specification's JSON schema (check-jsonschema's vendored copy)
#   - docker/otel-collector.yaml parses as YAML
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-test-tools.sh >/dev/null
.venv/bin/hadolint docker/Dockerfile
.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
.venv/bin/python -c 'import sys, ruamel.yaml; ruamel.yaml.YAML(typ="safe").load(open(sys.argv[1]))' docker/otel-collector.yaml
echo "docker/: Dockerfile lints clean, compose.yaml matches the Compose Specification, otel-collector.yaml parses"
