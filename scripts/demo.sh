#!/usr/bin/env bash
# Run the storage.mobility demo playbook against the local inventory.
# Extra arguments go to ansible-playbook, e.g.: scripts/demo.sh -v --check
# --btrfs (first argument, root only) runs the btrfs demo instead: a writable,
# driver-assisted migration with snapshots between two btrfs filesystems.
# --hosts (first argument, root only) starts the ssh lab and moves two shares from one storage host
# to another: a posix share through the data node datac, and a btrfs share host to host
# (tests/integration/sshlab/demo.py, docs/hosts.md); extra arguments go to it.
# --volumes (first argument, root only) runs the volume demo: an asynchronous migration of a
# multi-GiB volume, written while its data moves, checked with sha256.
set -euo pipefail

playbook=playbooks/demo.yml
if [[ "${1:-}" == "--btrfs" ]]; then
  playbook=playbooks/demo_btrfs.yml
  shift
elif [[ "${1:-}" == "--hosts" ]]; then
  playbook=hosts
  shift
elif [[ "${1:-}" == "--volumes" ]]; then
  playbook=playbooks/demo_volumes.yml
  shift
fi

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "${ROOT}"
bash "${ROOT}/scripts/setup.sh"
# shellcheck source=scripts/env.sh
source "${ROOT}/scripts/env.sh"

if [[ "${playbook}" == hosts ]]; then
  cmd=(env "PYTHONPATH=${ROOT}/tests/integration${PYTHONPATH:+:${PYTHONPATH}}" python -m sshlab.demo "$@")
  echo "+ ${cmd[*]}"
  exec "${cmd[@]}"
fi

cmd=(ansible-playbook -i inventories/local/hosts.yml "${playbook}" "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
