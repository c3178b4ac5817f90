# shellcheck shell=bash
# Environment for working on the storage.mobility collection.
#
# Source it (do not run it) after scripts/setup.sh has built .venv:
#     source scripts/env.sh
# It exports nothing outside the shell that sources it, and it is safe under
# `set -euo pipefail`. Sourcing it twice does not stack PATH entries.

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "scripts/env.sh is meant to be sourced: source scripts/env.sh" >&2
    exit 2
fi

MOBILITY_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
export MOBILITY_ROOT
export MOBILITY_VENV="${MOBILITY_ROOT}/.venv"

# The venv, without activating it (activate needs a terminal-friendly shell).
export VIRTUAL_ENV="${MOBILITY_VENV}"
case ":${PATH:-}:" in
    *":${MOBILITY_VENV}/bin:"*) ;;
    *) export PATH="${MOBILITY_VENV}/bin${PATH:+:${PATH}}" ;;
esac
unset PYTHONHOME

# Ansible finds this collection through the symlink tree that setup.sh keeps:
#     .venv/collections/ansible_collections/storage/mobility -> repository root
export ANSIBLE_COLLECTIONS_PATH="${MOBILITY_VENV}/collections"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
# pytest imports `ansible_collections.storage.mobility...` from the same tree.
case ":${PYTHONPATH:-}:" in
    *":${ANSIBLE_COLLECTIONS_PATH}:"*) ;;
    *) export PYTHONPATH="${ANSIBLE_COLLECTIONS_PATH}${PYTHONPATH:+:${PYTHONPATH}}" ;;
esac

export ANSIBLE_RETRY_FILES_ENABLED=false
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE="${PYTHONDONTWRITEBYTECODE:-1}"

# No terminal (CI, pipes): plain output from Ansible, pytest and ansible-lint.
if [[ ! -t 1 ]]; then
    export ANSIBLE_NOCOLOR=1
    export ANSIBLE_FORCE_COLOR=0
    export PY_COLORS=0
    export NO_COLOR=1
fi
