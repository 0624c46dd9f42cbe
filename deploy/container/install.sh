#!/bin/sh
# Installs bertgate as the image runs it, and is the Dockerfile's one install step. It needs node,
# npm and python3 (with venv), nothing else: no compiler, the engine is a prebuild.
#
#   install.sh APP_DIR PACKAGE
#
# APP_DIR   where the app goes: APP_DIR/.venv holds torch, APP_DIR/node_modules holds bertgate.
# PACKAGE   what npm installs: bertgate@<version>, or the path of a tarball from npm pack.
# TORCH     what pip installs into the venv (default torch==2.11.0, the CUDA build from PyPI,
#           with its nvidia-* libraries); TORCH_PIP_FLAGS, extra pip flags (default none).
#
# npm test runs this script in a fresh directory (test/deploy.test.ts) with the tarball of the
# checkout and a torch wheel without its multi-GB CUDA dependencies (TORCH_PIP_FLAGS=--no-deps).
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: install.sh APP_DIR PACKAGE" >&2
  exit 2
fi
app=$1
package=$2
torch=${TORCH:-torch==2.11.0}

# A tarball given by a relative path is found from where the script was run, not from APP_DIR.
if [ -e "$package" ]; then
  package=$(cd "$(dirname "$package")" && pwd)/$(basename "$package")
fi
mkdir -p "$app"
cd "$app"
app=$(pwd)

# torch for the engine to load: bertgate finds it through BERTGATE_PYTHON (the Dockerfile sets
# it to this venv's python).
python3 -m venv "$app/.venv"
# shellcheck disable=SC2086 # TORCH and TORCH_PIP_FLAGS are word lists
"$app/.venv/bin/pip" install --disable-pip-version-check --no-compile --quiet ${TORCH_PIP_FLAGS:-} $torch

# --ignore-scripts: bertgate needs no install script (its engines are prebuilt for each torch).
if [ ! -f package.json ]; then
  printf '{ "name": "bertgate-app", "private": true }\n' > package.json
fi
npm install --ignore-scripts --omit=dev --no-audit --no-fund "$package"

# The engine that fits this torch loads, or the build fails here rather than in a pod.
BERTGATE_PYTHON="$app/.venv/bin/python" node "$app/node_modules/bertgate/dist/lib/cli/main.js" doctor
