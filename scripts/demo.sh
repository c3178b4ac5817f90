#!/usr/bin/env bash
# Run the storage.mobility demo playbook against the local inventory.
# Extra arguments go to ansible-playbook, e.g.: scripts/demo.sh -v --check
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "${ROOT}"
bash "${ROOT}/scripts/setup.sh"
# shellcheck source=scripts/env.sh
source "${ROOT}/scripts/env.sh"

cmd=(ansible-playbook -i inventories/local/hosts.yml playbooks/demo.yml "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
