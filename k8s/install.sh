#!/bin/bash
# Installs actionlab in a pod before it starts Ray or the MLflow server (k8s/raycluster.yaml,
# k8s/mlflow.yaml run `bash /etc/actionlab/install.sh`), from the ConfigMap actionlab-install that
# README.md ("Kubernetes") makes of this file and k8s/requirements.lock:
#
#   1. every dependency from the lock, each file checked against its sha256 (--require-hashes);
#      --no-deps: the lock is the whole closure, so nothing is resolved, or downloaded unchecked,
#      at start. Packages the image already has at the locked version are kept.
#   2. actionlab itself from $ACTIONLAB_PIP (the ConfigMap actionlab-source), which must name a commit
#      (`actionlab @ git+https://...@<40 hex>`): a branch or tag could move between two pod starts.
#      --no-deps (step 1 has them) and --no-build-isolation (the lock's setuptools builds it, instead
#      of one downloaded unchecked).
#
# Usage: bash install.sh [LOCK]   (LOCK: default requirements.lock beside this file)
set -euo pipefail

lock=${1:-$(dirname "${BASH_SOURCE[0]}")/requirements.lock}
source=${ACTIONLAB_PIP:-}
if [[ ! $source =~ ^actionlab\ @\ git\+[^@\ ]+@[0-9a-f]{40}$ ]]; then
  echo "install.sh: ACTIONLAB_PIP is '$source'; expected 'actionlab @ git+https://<host>/<repo>@<commit>'" \
       "with the full 40-character commit (README.md, \"Kubernetes\")" >&2
  exit 2
fi
if [ ! -s "$lock" ]; then
  echo "install.sh: no lock at $lock (the ConfigMap actionlab-install, README.md \"Kubernetes\")" >&2
  exit 2
fi

python -m pip install --no-cache-dir --no-deps --require-hashes -r "$lock"
python -m pip install --no-cache-dir --no-deps --no-build-isolation "$source"
