#!/usr/bin/env bash
# Run the storage.mobility demo playbook against the local inventory.
# Extra arguments go to ansible-playbook, e.g.: scripts/demo.sh -v --check
# --btrfs (first argument, root only) runs the btrfs demo instead: a writable,
# driver-assisted migration with snapshots between two btrfs filesystems.
# --volumes (first argument, root only) runs the volume demo: an asynchronous migration of a
# multi-GiB volume, written while its data moves, checked with sha256.
set -euo pipefail

playbook=playbooks/demo.yml
if [[ "${1:-}" == "--btrfs" ]]; then
  playbook=playbooks/demo_btrfs.yml
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

cmd=(ansible-playbook -i inventories/local/hosts.yml "${playbook}" "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
