#!/usr/bin/env bash
# Run the storage.mobility test stages and print a summary.
#
#   scripts/test.sh                 pytest (unit + integration), ansible-test sanity, ansible-lint
#   scripts/test.sh --quick         pytest only
#   scripts/test.sh --only STAGE    one stage: unit | integration | sanity | lint
#
# Every stage runs even when an earlier one failed; the exit status is non-zero
# when any stage failed. Extra pytest arguments go through PYTEST_ADDOPTS, e.g.
#   PYTEST_ADDOPTS='-k share -x' scripts/test.sh --only unit
# Under CI=true a skipped pytest test counts as a failure (tests/conftest.py).
#
# Environment:
#   MOBILITY_KEEP_SANITY_DIR=1   keep the temporary copy ansible-test sanity ran in
#   SANITY_ARGS='...'            extra arguments for ansible-test sanity (e.g. '--test pep8')
#   MOBILITY_OPENSTACK_LAB=FILE  lab.json of a running OpenStack lab to test against (as root,
#                                test.sh otherwise starts one in the background and stops it)
#   MOBILITY_KEEP_LAB=1          keep the folder of the lab test.sh started (logs)
#   MOBILITY_SERIAL_STAGES=1     run one pytest, then sanity and lint, instead of the fault campaign,
#                                three pytest lanes, sanity and lint beside the main pytest
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

quick=0
only=""
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --only)
            (($# >= 2)) || { echo "test.sh: --only needs a stage name" >&2; exit 2; }
            only="$2"
            shift
            ;;
        --only=*) only="${1#--only=}" ;;
        -h | --help) usage; exit 0 ;;
        *) echo "test.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "${only}" in
    "" | unit | integration | sanity | lint) ;;
    *) echo "test.sh: --only takes unit, integration, sanity or lint, not '${only}'" >&2; exit 2 ;;
esac

cd -- "${ROOT}"
bash "${ROOT}/scripts/setup.sh"
# shellcheck source=scripts/env.sh
source "${ROOT}/scripts/env.sh"

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mobility-test.XXXXXX")"
trap 'rm -rf -- "${LOG_DIR}"' EXIT

now() { printf '%s\n' "${EPOCHREALTIME:-${SECONDS}}"; }

# ---------------------------------------------------------------- stages ----

# pytest over the given test directories or files (those that exist: git drops empty folders).
stage_pytest() {
    local dirs=() d rc
    for d in "$@"; do
        if [[ -e "${d}" ]]; then
            dirs+=("${d}")
        else
            echo "test.sh: ${d} does not exist; not passing it to pytest"
        fi
    done
    if ((${#dirs[@]} == 0)); then
        echo "test.sh: no test directories to run (wanted: $*)" >&2
        return 1
    fi
    set +e
    # PYTEST_EXCLUDE: paths (space-separated) that another stage runs beside this one.
    local exclude=() path
    for path in ${PYTEST_EXCLUDE:-}; do
        exclude+=(--ignore "${path}")
    done
    # --durations: every run names its slowest tests, so that the next split of the lanes below
    # is made from figures, not guesses.
    if [[ -n "${STAGE_SLOT:-}" ]]; then
        echo "${PYTEST_LOG_NAME:-pytest.log}" >"${LOG_DIR}/${STAGE_SLOT}.logname"
    fi
    python -m pytest -ra --durations=40 "${exclude[@]}" "${dirs[@]}" 2>&1 | tee "${LOG_DIR}/${PYTEST_LOG_NAME:-pytest.log}"
    rc="${PIPESTATUS[0]}"
    set -e
    if ((rc == 5)); then
        echo "test.sh: pytest collected no tests (exit 5); counted as a failure" >&2
    fi
    return "${rc}"
}

# Files of the working tree that belong in the collection, NUL-separated:
# tracked and untracked-but-not-ignored files when this is a git checkout.
list_tree_files() {
    if git -C "${ROOT}" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
        && [[ "$(git -C "${ROOT}" rev-parse --show-toplevel)" == "${ROOT}" ]]; then
        git -C "${ROOT}" ls-files -z --cached --others --exclude-standard
    else
        (cd -- "${ROOT}" && find . -mindepth 1 \
            \( -name .git -o -name .venv -o -name .ansible -o -name __pycache__ -o -name .pytest_cache \
            -o -name .mypy_cache -o -name .ruff_cache -o -name .tox -o -path ./tests/output \) -prune \
            -o \( -type f -o -type l \) -printf '%P\0')
    fi
}

# Keep only files that exist and are not caches or build output.
filter_tree_files() {
    local f
    while IFS= read -r -d '' f; do
        case "${f}" in
            .git/* | .venv/* | .ansible/* | tests/output/* | *.tar.gz) continue ;;
            __pycache__/* | */__pycache__/* | *.pyc | .pytest_cache/* | */.pytest_cache/*) continue ;;
        esac
        if [[ -e "${ROOT}/${f}" || -L "${ROOT}/${f}" ]]; then
            printf '%s\0' "${f}"
        fi
    done
}

# The file name ansible-test looks for before downloading get-pip.py:
# ~/.ansible/test/cache/get_pip_<pip version with _>.py, the pip version being
# the one pinned in ansible_test/_internal/python_requirements.py.
get_pip_cache_path() {
    python - <<'PY'
import os
import re
import sys

import ansible_test

source = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")
with open(source, encoding="utf-8") as handle:
    match = re.search(r"""\bpip\s*=\s*['"]([0-9][0-9a-zA-Z.]*)['"]""", handle.read())
if not match:
    sys.exit(f"cannot find the pip version in {source}")
print(os.path.expanduser(f"~/.ansible/test/cache/get_pip_{match.group(1).replace('.', '_')}.py"))
PY
}

# ansible-test bootstraps pip in each sanity venv by running get-pip.py, which it
# downloads from a host that may be unreachable. A cached file at the expected
# path is used instead: this one installs Python's bundled pip (ensurepip) and
# then, best effort, the pip version ansible-test asked for, from the index.
write_get_pip() {
    local path="$1" marker="storage.mobility offline get-pip stand-in v2"
    if [[ -f "${path}" ]]; then
        if ! grep -q "storage.mobility offline get-pip stand-in" "${path}" || grep -q "${marker}" "${path}"; then
            echo "test.sh: using existing ${path}"
            return 0
        fi
    fi
    mkdir -p -- "$(dirname -- "${path}")"
    cat >"${path}.tmp" <<PY
"""${marker} (written by scripts/test.sh).

ansible-test runs this instead of downloading get-pip.py. It bootstraps pip with
ensurepip, then installs the requested packages (e.g. pip==X.Y) if the package
index allows; otherwise the bundled pip stays.
"""
import ensurepip
import os
import subprocess
import sys

# ensurepip drops PIP_* variables and pip.conf from os.environ; the second pip
# run needs them (index, certificates, proxies), so keep a copy.
environment = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
if any(not arg.startswith("-") for arg in args):
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--retries", "1", *args]
    if subprocess.call(command, env=environment) != 0:
        print("get-pip stand-in: could not install %s; keeping the bundled pip" % " ".join(args), file=sys.stderr)
PY
    mv -f -- "${path}.tmp" "${path}"
    echo "test.sh: wrote ${path} (offline pip bootstrap for ansible-test)"
}

stage_sanity() {
    local work dest pyver get_pip namespace name rc
    namespace="$(python -c 'import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))["namespace"])' galaxy.yml)"
    name="$(python -c 'import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))["name"])' galaxy.yml)"
    pyver="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

    work="$(mktemp -d "${TMPDIR:-/tmp}/mobility-sanity.XXXXXX")"
    if [[ "${MOBILITY_KEEP_SANITY_DIR:-0}" == "1" ]]; then
        echo "test.sh: keeping ${work}"
    else
        # shellcheck disable=SC2064  # expand now: the trap runs after work is out of scope
        trap "rm -rf -- '${work}'" EXIT
    fi
    # ansible-test wants .../ansible_collections/<namespace>/<name> with no symlink in the path.
    work="$(cd -- "${work}" && pwd -P)"
    dest="${work}/ansible_collections/${namespace}/${name}"
    mkdir -p -- "${dest}"
    list_tree_files | filter_tree_files | tar -C "${ROOT}" --null --no-recursion -T - -cf - | tar -C "${dest}" -xf -
    echo "test.sh: copied $(find "${dest}" -type f | wc -l) files to ${dest}"

    get_pip="$(get_pip_cache_path)"
    write_get_pip "${get_pip}"

    cd -- "${dest}"
    local cmd=(ansible-test sanity --requirements --python "${pyver}" --color no)
    if [[ -n "${SANITY_ARGS:-}" ]]; then
        local extra=()
        read -r -a extra <<<"${SANITY_ARGS}"
        cmd+=("${extra[@]}")
    fi
    echo "+ ${cmd[*]}"
    set +e
    "${cmd[@]}"
    rc=$?
    set -e
    return "${rc}"
}

# The seeded fault-injection campaign (tests/integration/test_fault_campaign.py) spends most of
# its time waiting for the playbooks it kills and reruns: in a full run it runs beside pytest.
CAMPAIGN_TESTS="tests/integration/test_fault_campaign.py"
# The test command replays one fixed seed, so that a run can be repeated point for point;
# MOBILITY_FAULT_SEED=N picks another, and pytest run by hand draws a fresh one each time.
CAMPAIGN_SEED=837948315
# 6 faults per mechanism (pytest run by hand takes 20): the campaign shares the machine's two CPUs
# with three pytest lanes, sanity and lint, and a CI machine may be three times slower than this
# one (a fresh-clone run there spent 1871 CPU seconds on 12 faults per mechanism).
# MOBILITY_FAULT_POINTS=N asks for more.
stage_campaign() {
    MOBILITY_FAULT_SEED="${MOBILITY_FAULT_SEED:-${CAMPAIGN_SEED}}" PYTEST_LOG_NAME=campaign.log \
        MOBILITY_FAULT_POINTS="${MOBILITY_FAULT_POINTS:-6}" stage_pytest "${CAMPAIGN_TESTS}"
}

# Integration tests that spend their time waiting for the playbooks and hosts they drive: in a full
# run each lane is a second (third) pytest beside the main one. Every test builds its own pools,
# hosts and jobs under its own tmp_path, so lanes never share a mount, a port or a file.
# Measured in a fresh-clone CI run (CI=true, root, 7ed0564): main 1548 s (658 s CPU), remote lane
# 1551 s (509 s), host lane 1487 s (601 s), replica lane 1192 s (298 s), campaign 687 s (457 s),
# sanity 711 s (107 s), lint 483 s (60 s). The wall time of the whole run is about the total CPU
# seconds over the machine's two CPUs: put a new test file in the lane that ends first, and each
# stage's CPU seconds are in the summary.
HOST_LANE="tests/integration/test_host_migration.py tests/integration/test_ssh_data_node.py"
REMOTE_LANE="tests/integration/test_ssh_storage.py tests/integration/test_ssh_transport.py tests/integration/test_ssh_direct.py
tests/integration/test_ssh_hosts.py tests/integration/test_progress.py tests/integration/test_volume_file.py
tests/integration/test_preservation.py tests/integration/test_targets.py tests/integration/test_replication_ssh.py"
REPLICA_LANE="tests/integration/test_replication.py tests/integration/test_replication_crash.py
tests/integration/test_volume_async.py tests/integration/test_failure_cleanup.py tests/integration/test_evacuation.py
tests/integration/test_ssh_faults.py"
stage_lane() {
    local log="$1"
    shift
    PYTEST_LOG_NAME="${log}" stage_pytest "$@"
}

# The host and replica lanes' ssh labs (test_ssh_data_node.py, test_ssh_faults.py) run beside the
# remote lane's: each on loopback addresses of its own as well as its own port (the tests find their
# ssh processes by both).
stage_host_lane() {
    SSHLAB_ADDRESSES=127.0.0.21,127.0.0.22,127.0.0.23 stage_lane "$@"
}
# test_ssh_faults.py in the replica lane replays a fixed seed too (its own), so that a failure in CI
# can be replayed fault for fault (the seed is printed with every line of its output).
SSH_FAULTS_SEED=50745316
stage_replica_lane() {
    MOBILITY_FAULT_SEED="${MOBILITY_FAULT_SEED:-${SSH_FAULTS_SEED}}" \
        SSHLAB_ADDRESSES=127.0.0.31,127.0.0.32,127.0.0.33 stage_lane "$@"
}

stage_lint() {
    echo "+ ansible-lint (config .ansible-lint)"
    ansible-lint --version
    ansible-lint
}

# ---------------------------------------------------------------- runner ----

STAGE_NAMES=()
STAGE_RESULTS=()
STAGE_TIMES=()
STAGE_NOTES=()

# CPU time of each stage, with everything it started (daemons, copy workers and services too):
# as root where the cgroup v1 cpuacct controller is mounted, each stage runs in a cgroup of its
# own and the summary says how many CPU seconds it used. Elsewhere the column is left out.
CPU_GROUP_ROOT=/sys/fs/cgroup/cpuacct
cpu_group_make() {
    if [[ -w "${CPU_GROUP_ROOT}" && -f "${CPU_GROUP_ROOT}/cpuacct.usage" ]]; then
        mkdir -p "${CPU_GROUP_ROOT}/storage-mobility-test-$$-$1" 2>/dev/null || true
    fi
}
cpu_group_join() {
    local group="${CPU_GROUP_ROOT}/storage-mobility-test-$$-$1"
    if [[ -d "${group}" ]]; then
        echo "${BASHPID}" >"${group}/cgroup.procs" 2>/dev/null || true
    fi
}
cpu_group_report() {
    local group="${CPU_GROUP_ROOT}/storage-mobility-test-$$-$1" usage pid
    if [[ -f "${group}/cpuacct.usage" ]]; then
        usage="$(cat "${group}/cpuacct.usage")"
        # Whatever still runs in the group (nothing should) goes back to the parent group.
        while read -r pid; do
            echo "${pid}" >"${CPU_GROUP_ROOT}/cgroup.procs" 2>/dev/null || true
        done <"${group}/cgroup.procs"
        rmdir "${group}" 2>/dev/null || true
        awk -v u="${usage}" 'BEGIN { printf "cpu %.0fs", u / 1e9 }'
    fi
}

# Run one stage and leave its result in ${LOG_DIR}/<slot>.result (name, result, time, note: one a
# line), so that a stage run in the background reports the same way as one in the foreground.
measure_stage() {
    local slot="$1" name="$2" start end rc note="" result elapsed
    shift 2
    printf '\n========== stage: %s ==========\n' "${name}"
    start="$(now)"
    cpu_group_make "${slot}"
    set +e
    (
        set -euo pipefail
        cpu_group_join "${slot}"
        export STAGE_SLOT="${slot}"
        "$@"
    )
    rc=$?
    set -e
    end="$(now)"
    if [[ -f "${LOG_DIR}/${slot}.logname" && -f "${LOG_DIR}/$(cat "${LOG_DIR}/${slot}.logname")" ]]; then
        note="$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran|deselected).* =+$' "${LOG_DIR}/$(cat "${LOG_DIR}/${slot}.logname")" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')" || true
    fi
    note="$(cpu_group_report "${slot}")${note:+; }${note}"
    if ((rc == 0)); then
        result="pass"
    else
        result="FAIL (exit ${rc})"
    fi
    elapsed="$(awk -v s="${start}" -v e="${end}" 'BEGIN { printf "%.1fs", e - s }')"
    printf '%s\n%s\n%s\n%s\n' "${name}" "${result}" "${elapsed}" "${note}" >"${LOG_DIR}/${slot}.result"
    printf '========== stage %s: %s in %s ==========\n' "${name}" "${result}" "${elapsed}"
}

# Add the result a stage left to the summary (a stage that left none failed).
collect_stage() {
    local slot="$1" name="$2" lines=()
    if [[ -f "${LOG_DIR}/${slot}.result" ]]; then
        mapfile -t lines <"${LOG_DIR}/${slot}.result"
    else
        lines=("${name}" "FAIL (no result)" "-" "")
    fi
    STAGE_NAMES+=("${lines[0]}")
    STAGE_RESULTS+=("${lines[1]}")
    STAGE_TIMES+=("${lines[2]}")
    STAGE_NOTES+=("${lines[3]:-}")
}

run_stage() {
    local slot="stage${#STAGE_NAMES[@]}" name="$1"
    shift
    measure_stage "${slot}" "${name}" "$@"
    collect_stage "${slot}" "${name}"
}

# Sanity and lint use files of the tree only, not what the tests start: in a full run they run in
# the background while pytest runs (pytest keeps about one CPU busy), and their output is printed
# after pytest's. MOBILITY_SERIAL_STAGES=1 runs them one after another instead.
BACKGROUND_PIDS=()
BACKGROUND_SLOTS=()
BACKGROUND_NAMES=()
start_background_stage() {
    local slot="bg${#BACKGROUND_SLOTS[@]}" name="$1"
    shift
    echo "test.sh: ${name} runs in the background; its output follows pytest's"
    measure_stage "${slot}" "${name}" "$@" >"${LOG_DIR}/${slot}.out" 2>&1 </dev/null &
    BACKGROUND_PIDS+=("$!")
    BACKGROUND_SLOTS+=("${slot}")
    BACKGROUND_NAMES+=("${name}")
}
finish_background_stages() {
    local i
    for i in "${!BACKGROUND_PIDS[@]}"; do
        wait "${BACKGROUND_PIDS[i]}" || true
        cat -- "${LOG_DIR}/${BACKGROUND_SLOTS[i]}.out"
        collect_stage "${BACKGROUND_SLOTS[i]}" "${BACKGROUND_NAMES[i]}"
    done
}

skip_stage() {
    STAGE_NAMES+=("$1")
    STAGE_RESULTS+=("not run")
    STAGE_TIMES+=("-")
    STAGE_NOTES+=("$2")
}

# The OpenStack lab (real Manila and Cinder, tests/integration/openstack/) takes minutes to
# start: as root, start it in the background now so that it gets ready while the other tests
# run; its tests run last (tests/conftest.py) and wait for it. MOBILITY_OPENSTACK_LAB set by the
# caller means "use that lab" (a lab.json path) and nothing is started here.
LAB_BASE=""
start_openstack_lab() {
    [[ -z "${MOBILITY_OPENSTACK_LAB:-}" && "$(id -u)" == 0 ]] || return 0
    [[ -f "${ROOT}/tests/integration/openstack/lab.py" ]] || return 0
    LAB_BASE="$(mktemp -d "${TMPDIR:-/tmp}/mobility-openstack-lab.XXXXXX")"
    echo "test.sh: starting the OpenStack lab in ${LAB_BASE} (log: ${LAB_BASE}/start.log)"
    python "${ROOT}/tests/integration/openstack/lab.py" start "${LAB_BASE}" >"${LAB_BASE}/start.log" 2>&1 &
    export MOBILITY_OPENSTACK_LAB="${LAB_BASE}/lab.json"
}
stop_openstack_lab() {
    [[ -n "${LAB_BASE}" ]] || return 0
    python "${ROOT}/tests/integration/openstack/lab.py" stop "${LAB_BASE}" >>"${LAB_BASE}/start.log" 2>&1 || true
    wait || true
    if [[ "${MOBILITY_KEEP_LAB:-0}" != "1" ]]; then
        rm -rf -- "${LAB_BASE}"
    fi
}
cleanup() {
    local pid
    for pid in "${BACKGROUND_PIDS[@]}"; do
        kill -- "${pid}" 2>/dev/null || true
    done
    stop_openstack_lab
    rm -rf -- "${LOG_DIR}"
}
trap cleanup EXIT

total_start="$(now)"
case "${only}" in
    unit) run_stage "pytest unit" stage_pytest tests/unit ;;
    integration)
        start_openstack_lab
        run_stage "pytest integration" stage_pytest tests/integration
        ;;
    sanity) run_stage "ansible-test sanity" stage_sanity ;;
    lint) run_stage "ansible-lint" stage_lint ;;
    "")
        start_openstack_lab
        if ((quick)); then
            run_stage "pytest" stage_pytest tests/unit tests/integration
            skip_stage "ansible-test sanity" "--quick"
            skip_stage "ansible-lint" "--quick"
        elif [[ "${MOBILITY_SERIAL_STAGES:-0}" == "1" ]]; then
            run_stage "pytest" stage_pytest tests/unit tests/integration
            run_stage "ansible-test sanity" stage_sanity
            run_stage "ansible-lint" stage_lint
        else
            start_background_stage "fault campaign" stage_campaign
            # shellcheck disable=SC2086 # the lanes are lists of paths without spaces
            start_background_stage "pytest host lane" stage_host_lane host-lane.log ${HOST_LANE}
            # shellcheck disable=SC2086
            start_background_stage "pytest remote lane" stage_lane remote-lane.log ${REMOTE_LANE}
            # shellcheck disable=SC2086
            start_background_stage "pytest replica lane" stage_replica_lane replica-lane.log ${REPLICA_LANE}
            start_background_stage "ansible-test sanity" stage_sanity
            start_background_stage "ansible-lint" stage_lint
            PYTEST_EXCLUDE="${CAMPAIGN_TESTS} ${HOST_LANE} ${REMOTE_LANE} ${REPLICA_LANE}" run_stage "pytest" stage_pytest tests/unit tests/integration
            finish_background_stages
        fi
        ;;
esac
total_end="$(now)"

failed=()
printf '\n%-22s %-16s %9s  %s\n' "STAGE" "RESULT" "TIME" "NOTE"
printf '%-22s %-16s %9s  %s\n' "----------------------" "----------------" "---------" "----"
for i in "${!STAGE_NAMES[@]}"; do
    printf '%-22s %-16s %9s  %s\n' "${STAGE_NAMES[i]}" "${STAGE_RESULTS[i]}" "${STAGE_TIMES[i]}" "${STAGE_NOTES[i]}"
    if [[ "${STAGE_RESULTS[i]}" == FAIL* ]]; then
        failed+=("${STAGE_NAMES[i]}")
    fi
done
printf '%-22s %-16s %9s\n' "total" "" "$(awk -v s="${total_start}" -v e="${total_end}" 'BEGIN { printf "%.1fs", e - s }')"

# One closing line for every pytest run of this command together (pytest and the fault campaign).
if compgen -G "${LOG_DIR}/*.log" >/dev/null; then
    awk '/ (passed|failed|errors?)[ ,]/ && / in [0-9.]+s/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed/) p += $(i - 1)
                if ($(i) ~ /^failed/) f += $(i - 1)
                if ($(i) ~ /^error/) f += $(i - 1)
                if ($(i) ~ /^skipped/) k += $(i - 1)
            }
         }
         END { if (p + f + k > 0) printf "\npytest: %d passed, %d failed, %d skipped\n", p, f, k }' \
        "${LOG_DIR}"/*.log
fi

if ((${#failed[@]})); then
    joined="${failed[0]}"
    for name in "${failed[@]:1}"; do
        joined+=", ${name}"
    done
    printf '\ntest.sh: FAILED stage(s): %s\n' "${joined}"
    exit 1
fi
printf '\ntest.sh: all stages passed\n'
