#!/usr/bin/env bash
# Prepare this checkout for development and tests. Idempotent; safe to re-run.
#
#  1. System packages the collection uses (rsync, acl, attr, xfsprogs, e2fsprogs,
#     btrfs-progs, util-linux, python3-venv; qemu-utils, qemu-system-common and fuse3
#     for the file volume driver; shellcheck for ansible-test sanity):
#     installed with apt-get when running as root, otherwise only reported.
#  2. A Python >= 3.11 virtual environment in .venv with requirements-dev.txt
#     (reinstalled only when that file changes).
#  3. .venv/collections/ansible_collections/storage/mobility -> repository root,
#     so Ansible and pytest can import the collection (see scripts/env.sh).
#
# Environment:
#   MOBILITY_PYTHON=/path/to/python   use this interpreter for .venv
#   MOBILITY_SKIP_APT=1               never call apt-get
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="${ROOT}/.venv"
REQUIREMENTS="${ROOT}/requirements-dev.txt"
STAMP="${VENV}/.requirements-dev.sha256"
MIN_PY_MAJOR=3
MIN_PY_MINOR=11

# Debian package -> a command it provides (for machines without dpkg).
declare -A PKG_COMMAND=(
    [rsync]=rsync
    [acl]=setfacl
    [attr]=setfattr
    [xfsprogs]=mkfs.xfs
    [e2fsprogs]=mkfs.ext4
    [btrfs-progs]=mkfs.btrfs
    [util-linux]=losetup
    [python3-venv]=""
    [shellcheck]=shellcheck
    [qemu-utils]=qemu-img
    [qemu-system-common]=qemu-storage-daemon
    [openssh-client]=ssh
    [openssh-server]=sshd
    [sshfs]=sshfs
    [fuse3]=fusermount3
)
# What the collection and its tests use, plus shellcheck: without it ansible-test
# sanity skips its shellcheck test with only a warning. openssh-client/-server: the ssh
# transport and its test lab (tests/integration/sshlab starts its own sshd processes; Debian's
# package does not start one here); sshfs and fuse3: the lab's data node mounts.
PACKAGES=(rsync acl attr xfsprogs e2fsprogs btrfs-progs util-linux python3-venv shellcheck
          openssh-client openssh-server sshfs fuse3)
# The file volume driver: images (qemu-img), attachments (qemu-storage-daemon, FUSE).
PACKAGES+=(qemu-utils qemu-system-common)

log() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

package_present() {
    local pkg="$1" cmd
    if command -v dpkg-query >/dev/null 2>&1; then
        [[ "$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null || true)" == "install ok installed" ]]
        return
    fi
    cmd="${PKG_COMMAND[${pkg}]}"
    if [[ -z "${cmd}" ]]; then
        return 0  # python3-venv: checked below when the venv is created
    fi
    PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin" command -v "${cmd}" >/dev/null 2>&1
}

install_system_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if ! package_present "${pkg}"; then
            missing+=("${pkg}")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "system packages: all present (${PACKAGES[*]})"
        return 0
    fi
    if [[ "${MOBILITY_SKIP_APT:-0}" == "1" ]]; then
        warn "missing system packages (MOBILITY_SKIP_APT=1, not installing): ${missing[*]}"
        return 0
    fi
    if [[ "$(id -u)" != "0" ]]; then
        warn "missing system packages: ${missing[*]}"
        warn "install them as root: apt-get install --no-install-recommends ${missing[*]}"
        warn "tests that need them will skip (and fail under CI=true)"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "missing system packages and no apt-get to install them: ${missing[*]}"
        return 0
    fi
    log "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "installed: ${missing[*]}"
}

# Print the path of the first Python >= 3.11 that can create a venv with pip.
find_python() {
    local candidates=() cand path
    if [[ -n "${MOBILITY_PYTHON:-}" ]]; then
        candidates+=("${MOBILITY_PYTHON}")
    fi
    candidates+=(python3 python3.13 python3.12 python3.11)
    for cand in "${candidates[@]}"; do
        path="$(command -v "${cand}" 2>/dev/null)" || continue
        # pyenv shims exist for versions that are not active: run, don't trust.
        if "${path}" - "${MIN_PY_MAJOR}" "${MIN_PY_MINOR}" >/dev/null 2>&1 <<'PY'
import sys
import ensurepip  # noqa: F401  (Debian: python3-venv)
import venv  # noqa: F401
sys.exit(0 if sys.version_info[:2] >= (int(sys.argv[1]), int(sys.argv[2])) else 1)
PY
        then
            printf '%s\n' "${path}"
            return 0
        fi
    done
    return 1
}

venv_ok() {
    [[ -x "${VENV}/bin/python" ]] || return 1
    "${VENV}/bin/python" -c "import sys; sys.exit(0 if sys.version_info[:2] >= (${MIN_PY_MAJOR}, ${MIN_PY_MINOR}) else 1)" \
        >/dev/null 2>&1 || return 1
    "${VENV}/bin/python" -m pip --version >/dev/null 2>&1
}

ensure_venv() {
    local python
    if venv_ok; then
        log "venv: ${VENV} ($("${VENV}/bin/python" -c 'import platform; print(platform.python_version())'))"
        return 0
    fi
    if [[ -e "${VENV}" ]]; then
        log "venv: ${VENV} is broken or too old; recreating"
        rm -rf -- "${VENV}"
    fi
    python="$(find_python)" || die "no Python >= ${MIN_PY_MAJOR}.${MIN_PY_MINOR} with venv/ensurepip found (tried python3, python3.13, python3.12, python3.11; Debian: apt-get install python3-venv; or set MOBILITY_PYTHON)"
    log "venv: creating ${VENV} with ${python} ($("${python}" -c 'import platform; print(platform.python_version())'))"
    "${python}" -m venv -- "${VENV}"
}

ensure_requirements() {
    local want have=""
    [[ -f "${REQUIREMENTS}" ]] || die "missing ${REQUIREMENTS}"
    want="$(sha256sum -- "${REQUIREMENTS}" | cut -d' ' -f1)"
    if [[ -f "${STAMP}" ]]; then
        have="$(<"${STAMP}")"
    fi
    if [[ "${want}" == "${have}" && -x "${VENV}/bin/ansible-playbook" && -x "${VENV}/bin/ansible-test" ]]; then
        log "requirements-dev.txt: up to date"
        return 0
    fi
    log "pip install -r requirements-dev.txt (into .venv)"
    rm -f -- "${STAMP}"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "${VENV}/bin/python" -m pip install --quiet -r "${REQUIREMENTS}"
    printf '%s\n' "${want}" >"${STAMP}"
    log "installed: $("${VENV}/bin/python" -m pip freeze 2>/dev/null | grep -iE '^(ansible-core|ansible-lint|pytest|antsibull-changelog)==' | tr '\n' ' ')"
}

ensure_collection_link() {
    local parent="${VENV}/collections/ansible_collections/storage"
    local link="${parent}/mobility"
    local target="../../../.."   # relative: survives moving the checkout
    if [[ -L "${link}" && "$(readlink -- "${link}")" == "${target}" ]]; then
        return 0
    fi
    mkdir -p -- "${parent}"
    rm -rf -- "${link}"
    ln -s -- "${target}" "${link}"
    [[ "$(cd -- "${link}" && pwd -P)" == "${ROOT}" ]] || die "collection link ${link} does not resolve to ${ROOT}"
    log "collection: ${link} -> ${ROOT}"
}

main() {
    cd -- "${ROOT}"
    install_system_packages
    ensure_venv
    ensure_requirements
    ensure_collection_link
}

main "$@"
