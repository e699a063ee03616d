#!/usr/bin/env bash
# LiteLLM proxy for the overhead bench, in its own venv (never the project's): bench/.venv-litellm.
#   bash bench/overhead/install_litellm.sh [litellm version spec, default: latest]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/bench/.venv-litellm"
spec="${1:-}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "litellm[proxy]${spec}" "uvloop"
"$venv/bin/litellm" --version 2>/dev/null || "$venv/bin/pip" show litellm | head -2
