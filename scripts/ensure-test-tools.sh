#!/usr/bin/env bash
# Installs what the browser and API-contract tests need, when missing (safe to run repeatedly):
#   - Debian's chromium and chromium-driver (the browser test drives headless Chromium; no browser downloads)
#   - a local virtualenv .venv/ with the pinned Python tools (scripts/requirements-test.txt): schemathesis and
#     openapi-spec-validator for the tests, hadolint, check-jsonschema and kubernetes-validate for docker/ and deploy/
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver from Debian's packages..." >&2
  sudo_cmd=""
  if [[ "$(id -u)" != 0 ]]; then sudo_cmd="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -q chromium chromium-driver >/dev/null \
    || { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q chromium chromium-driver >/dev/null; }
fi

stamp=.venv/.requirements
if [[ ! -x .venv/bin/schemathesis || ! -f "$stamp" ]] || ! cmp -s scripts/requirements-test.txt "$stamp"; then
  echo "installing the pinned Python test tools (scripts/requirements-test.txt) into .venv/..." >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt "$stamp"
fi
