"""The collection as it is shipped: the built artifact, its install, ansible-doc, and the
execution environment that ansible-builder makes from it.

* The artifact (``ansible-galaxy collection build``) holds every tracked file of the collection
  and none of the development ones (tests, bench, scripts, dev configuration).
* Installed into a clean path, ``ansible-doc`` renders every module and role from that install.
* The Python packages the code imports and the programs it runs are derived from the code itself
  (an ``ast`` walk of plugins/): a new import or a new program without its line in requirements.txt
  or bindep.txt fails here. ``ansible-builder introspect`` of the installed collection must report
  them, and ``ansible-builder create`` must put the built collection into the build context, whose
  galaxy requirements and introspection script are then run here the way the image build would.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from test_targets import REPO_ROOT

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NAMESPACE, NAME = "storage", "mobility"

# What build_ignore keeps out of the artifact: (path prefix or exact file name).
DEV_PREFIXES = ("tests/", "bench/", "scripts/", ".ci/", ".venv/", ".git/", "build/", "context/")
DEV_FILES = ("requirements-dev.txt", "pytest.ini", ".ansible-lint", ".gitignore", "execution-environment.yml")

# Import name -> distribution on PyPI, for every import outside the standard library and Ansible.
# An import missing here fails test_requirements_cover_every_import: add it to requirements.txt and here.
IMPORT_DISTRIBUTIONS = {
    "openstack": "openstacksdk",
    "xxhash": "xxhash",
    "blake3": "blake3",
}

# bindep platform profiles of the systems the execution environment and data nodes run on.
PLATFORMS = {
    "debian": {"platform:dpkg", "platform:debian"},
    "ubuntu": {"platform:dpkg", "platform:ubuntu"},
    "fedora": {"platform:rpm", "platform:fedora", "platform:redhat"},
    "centos": {"platform:rpm", "platform:centos", "platform:redhat"},
    "rhel": {"platform:rpm", "platform:rhel", "platform:redhat"},
}
_DPKG = ("debian", "ubuntu")
_RPM = ("fedora", "centos", "rhel")


def _everywhere(package: str) -> dict:
    return {platform: package for platform in PLATFORMS}


# Program the code runs -> the package that has it, per platform (None: not available there, and
# the docs say so). A program missing here fails test_bindep_covers_every_program.
PROGRAM_PACKAGES = {
    "rsync": _everywhere("rsync"),
    "mount": _everywhere("util-linux"),
    "umount": _everywhere("util-linux"),
    "mount.nfs": dict({p: "nfs-common" for p in _DPKG}, **{p: "nfs-utils" for p in _RPM}),
    "mount.cifs": _everywhere("cifs-utils"),
    "setfacl": _everywhere("acl"),
    # RHEL and CentOS Stream ship no btrfs (docs/awx.md, bindep.txt).
    "btrfs": dict(_everywhere("btrfs-progs"), centos=None, rhel=None),
    # coreutils is essential on every base image (and conflicts with coreutils-single on minimal
    # RPM images), so bindep.txt does not name it.
    # The ssh transport (sshfs mounts on data nodes) and the file volume driver (qemu images):
    # named ahead of their code so that it finds its packages here when it lands.
    "sshfs": dict({p: "sshfs" for p in _DPKG}, **{p: "fuse-sshfs" for p in _RPM}),
    "fusermount3": _everywhere("fuse3"),
    "qemu-img": dict({p: "qemu-utils" for p in _DPKG}, **{p: "qemu-img" for p in _RPM}),
    # qemu-io (the async pull writes zeroes where the source has holes) ships beside qemu-img.
    "qemu-io": dict({p: "qemu-utils" for p in _DPKG}, **{p: "qemu-img" for p in _RPM}),
    "qemu-storage-daemon": dict({p: "qemu-system-common" for p in _DPKG}, **{p: "qemu-storage-daemon" for p in _RPM}),
    "cp": _everywhere(None),
    # dd (coreutils) probes whether a file on another host opens with O_DIRECT (Transport.opens_direct).
    "dd": _everywhere(None),
    "rm": _everywhere(None),
    "sleep": _everywhere(None),
    # find: essential on dpkg images, findutils on RPM ones (not in every minimal image).
    "find": dict({p: None for p in _DPKG}, **{p: "findutils" for p in _RPM}),
    # setsid starts the volume copier detached; kill stops it (procps on dpkg, util-linux on RPM).
    "setsid": _everywhere("util-linux"),
    "kill": dict({p: "procps" for p in _DPKG}, **{p: "util-linux" for p in _RPM}),
    # The ssh transport: the client here; python3 and sudo (become) on the storage host, not here.
    "ssh": dict({p: "openssh-client" for p in _DPKG}, **{p: "openssh-clients" for p in _RPM}),
    "python3": _everywhere(None),
    "sudo": _everywhere(None),
    # The direct stream between two storage hosts: ssh-keygen looks up the controller's known_hosts
    # entry for the peer (the ssh client's package); `true` is the login probe run on the peer.
    "ssh-keygen": dict({p: "openssh-client" for p in _DPKG}, **{p: "openssh-clients" for p in _RPM}),
    "true": _everywhere(None),
}

RUN_FUNCTIONS = {"run", "Popen", "run_command", "_pipe", "check_output", "check_call", "call"}


def _python_files() -> list[Path]:
    files = sorted((REPO_ROOT / "plugins").rglob("*.py"))
    files += sorted((REPO_ROOT / "playbooks").rglob("*.py"))
    files += sorted((REPO_ROOT / "roles").rglob("*.py"))
    return files


def _trees() -> list[tuple[Path, ast.AST]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) for path in _python_files()]


def derived_imports() -> dict[str, set[str]]:
    """Top-level names imported by the collection's code outside the standard library and Ansible."""
    found: dict[str, set[str]] = {}
    ignored = set(sys.stdlib_module_names) | {"ansible", "ansible_collections", "__future__"}
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in ignored:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _first_string(node: ast.AST) -> str | None:
    if isinstance(node, ast.List) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def _lists_in(node: ast.AST):
    """The first string of every list in ``node`` that can be an argv: not the lists handed to a
    ``join`` (mount options built as ``','.join(['ro'] + ...)``) nor those added to another list."""
    skipped: set[int] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr == "join":
            skipped.update(id(inner) for arg in child.args for inner in ast.walk(arg))
        if isinstance(child, ast.BinOp) and isinstance(child.op, ast.Add):
            skipped.update(id(inner) for inner in ast.walk(child.right))
    for child in ast.walk(node):
        if id(child) in skipped:
            continue
        value = _first_string(child)
        if value is not None:
            yield value


def _template_programs(template: str) -> set[str]:
    tokens = shlex.split(template)
    programs = {tokens[0]}
    if tokens[0] == "mount":
        for index, token in enumerate(tokens[:-1]):
            fstype = tokens[index + 1]
            if token in ("-t", "-vt") and "%" not in fstype:
                programs.add("mount." + fstype)
    return programs


def derived_programs() -> dict[str, set[str]]:
    """Programs the collection's code runs: argv lists given to a run call or kept as ``*argv``,
    ``shutil.which`` probes, and the mount templates."""
    found: dict[str, set[str]] = {}

    def add(program: str, path: Path) -> None:
        found.setdefault(program, set()).add(str(path.relative_to(REPO_ROOT)))

    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _call_name(node)
                if name == "which" and node.args and isinstance(node.args[0], ast.Constant):
                    add(node.args[0].value, path)
                elif name in RUN_FUNCTIONS:
                    for arg in list(node.args) + [kw.value for kw in node.keywords]:
                        for program in _lists_in(arg):
                            add(program, path)
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any("argv" in t for t in targets):
                    for program in _lists_in(node.value):
                        add(program, path)
                if any(t.endswith(("TEMPLATE", "TEMPLATES")) for t in targets):
                    values = node.value.values if isinstance(node.value, ast.Dict) else [node.value]
                    for child in values:
                        if isinstance(child, ast.Constant) and isinstance(child.value, str):
                            for program in _template_programs(child.value):
                                add(program, path)
    return found


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _bindep_packages(text: str, platform: str) -> set[str]:
    from bindep.depends import Depends  # ansible-builder's dependency; imported late for a clear error

    depends = Depends(text)
    return {rule[0] for rule in depends.active_rules(PLATFORMS[platform])}


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=str(cwd) if cwd else None, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        "command failed (%d): %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
        % (proc.returncode, " ".join(cmd), proc.stdout[-5000:], proc.stderr[-5000:]))
    return proc.stdout


def _tool(name: str) -> str:
    candidate = BIN / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail("%s not found: run scripts/setup.sh (it installs requirements-dev.txt)" % name, pytrace=False)
    return found


def _clean_env(collections: Path, work: Path) -> dict:
    env = dict(os.environ)
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATHS", "PYTHONPATH"):
        env.pop(name, None)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "HOME": str(work),
    })
    return env


def galaxy_version() -> str:
    return yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text(encoding="utf-8"))["version"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact")
    _run([_tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out), str(REPO_ROOT)],
         env=_clean_env(out, out))
    tarball = out / ("%s-%s-%s.tar.gz" % (NAMESPACE, NAME, galaxy_version()))
    assert tarball.is_file(), "ansible-galaxy collection build made no %s: %s" % (tarball.name, sorted(out.iterdir()))
    return tarball


@pytest.fixture(scope="module")
def installed(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean collections path with only the installed artifact in it."""
    root = tmp_path_factory.mktemp("installed")
    collections = root / "collections"
    _run([_tool("ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections), str(artifact)],
         env=_clean_env(collections, root))
    assert (collections / "ansible_collections" / NAMESPACE / NAME / "MANIFEST.json").is_file()
    return collections


def _tracked_files() -> list[str]:
    if not (REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.fail("needs the git checkout of the collection to list its tracked files", pytrace=False)
    out = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, check=True)
    return [name for name in out.stdout.decode("utf-8").split("\0") if name]


def _is_dev_file(name: str) -> bool:
    # A role's molecule scenarios (roles/<role>/molecule/) test it; they are not for users.
    return (name.startswith(DEV_PREFIXES) or name in DEV_FILES or "__pycache__" in name
            or (name.startswith("roles/") and name.split("/")[2:3] == ["molecule"]))


# ----------------------------------------------------------------------------- the artifact


def test_artifact_keeps_dev_files_out_and_collection_files_in(artifact: Path, installed: Path) -> None:
    with tarfile.open(artifact) as tar:
        members = {m.name[2:] if m.name.startswith("./") else m.name for m in tar.getmembers() if m.isfile()}
    leaked = sorted(name for name in members if _is_dev_file(name))
    assert not leaked, "development files in the built collection: %s" % leaked
    # galaxy.yml becomes MANIFEST.json and FILES.json in the artifact.
    missing = sorted(name for name in _tracked_files()
                     if not _is_dev_file(name) and name not in members and name != "galaxy.yml")
    assert not missing, "tracked collection files missing from the built collection: %s" % missing
    for needed in ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "meta/execution-environment.yml", "requirements.txt", "bindep.txt",
                   "changelogs/changelog.yaml", "docs/docsite/extra-docs.yml", "docs/docsite/links.yml"):
        assert needed in members, "%s is not in the built collection" % needed

    root = installed / "ansible_collections" / NAMESPACE / NAME
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    leaked = sorted(name for name in on_disk if _is_dev_file(name))
    assert not leaked, "development files in the installed collection: %s" % leaked
    for top in ("tests", "bench", "scripts", ".ci", ".venv"):
        assert not (root / top).exists(), "%s/ is in the installed collection" % top


def test_ansible_doc_renders_every_module_and_role_from_the_install(installed: Path, tmp_path: Path) -> None:
    env = _clean_env(installed, tmp_path)
    root = (installed / "ansible_collections" / NAMESPACE / NAME).resolve()
    modules = sorted(p.stem for p in (REPO_ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    roles = sorted(p.name for p in (REPO_ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
    assert modules and roles

    listed = json.loads(_run([_tool("ansible-doc"), "-t", "module", "--list", "--json", "%s.%s" % (NAMESPACE, NAME)],
                             env=env))
    assert sorted(name.split(".")[-1] for name in listed) == modules

    fqcns = ["%s.%s.%s" % (NAMESPACE, NAME, m) for m in modules]
    docs = json.loads(_run([_tool("ansible-doc"), "-t", "module", "--json"] + fqcns, env=env))
    for fqcn in fqcns:
        doc = docs[fqcn]["doc"]
        assert Path(doc["filename"]).resolve().is_relative_to(root), "%s documented from %s" % (fqcn, doc["filename"])
        assert doc.get("short_description") and doc.get("options") is not None
        assert docs[fqcn].get("examples"), "%s has no EXAMPLES" % fqcn
        assert doc.get("requirements"), "%s has no requirements section in DOCUMENTATION" % fqcn

    for role in roles:
        fqcn = "%s.%s.%s" % (NAMESPACE, NAME, role)
        out = json.loads(_run([_tool("ansible-doc"), "-t", "role", "--json", fqcn], env=env))
        assert out[fqcn]["entry_points"]["main"]["options"], "role %s rendered without options" % fqcn
        assert Path(out[fqcn]["path"]).resolve().is_relative_to(root)


# ----------------------------------------------------------------------------- requirements


def test_requirements_cover_every_import() -> None:
    imports = derived_imports()
    assert "openstack" in imports and "xxhash" in imports, "the import scan found nothing: %s" % imports
    unknown = {name: sorted(files) for name, files in imports.items() if name not in IMPORT_DISTRIBUTIONS}
    assert not unknown, ("imports outside the standard library and Ansible with no distribution in this test "
                         "(add it to requirements.txt and IMPORT_DISTRIBUTIONS): %s" % unknown)

    listed = {Requirement(line).name.lower(): Requirement(line) for line in _requirement_lines(REPO_ROOT / "requirements.txt")}
    needed = {IMPORT_DISTRIBUTIONS[name].lower() for name in imports}
    assert sorted(needed - set(listed)) == [], "requirements.txt lacks %s" % sorted(needed - set(listed))
    assert sorted(set(listed) - needed) == [], "requirements.txt lists what no code imports: %s" % sorted(set(listed) - needed)

    # The versions the tests run with (requirements-dev.txt) are admitted by the runtime ranges.
    dev = {Requirement(line).name.lower() for line in _requirement_lines(REPO_ROOT / "requirements-dev.txt")}
    for name, requirement in listed.items():
        if name in dev:
            version = importlib.metadata.version(name)
            assert requirement.specifier.contains(version, prereleases=True), (
                "requirements.txt has %s, the tests run with %s %s" % (requirement, name, version))


def test_bindep_covers_every_program() -> None:
    programs = derived_programs()
    for expected in ("rsync", "btrfs", "mount", "umount", "mount.nfs"):
        assert expected in programs, "the program scan missed %s: %s" % (expected, sorted(programs))
    unknown = {p: sorted(files) for p, files in programs.items() if p not in PROGRAM_PACKAGES}
    assert not unknown, ("programs run by the code with no package in this test (add the package to bindep.txt "
                         "and the program to PROGRAM_PACKAGES): %s" % unknown)

    text = (REPO_ROOT / "bindep.txt").read_text(encoding="utf-8")
    for platform in PLATFORMS:
        active = _bindep_packages(text, platform)
        for program in programs:
            package = PROGRAM_PACKAGES[program][platform]
            if package is not None:
                assert package in active, "bindep.txt does not give %s (for %s) on %s" % (package, program, platform)
        # What the execution environment needs besides the programs above.
        for package in ("acl", "attr", "xfsprogs", "e2fsprogs"):
            assert package in active, "bindep.txt does not give %s on %s" % (package, platform)
        for program in ("sshfs", "fusermount3", "qemu-img", "qemu-storage-daemon"):
            assert PROGRAM_PACKAGES[program][platform] in active, "bindep.txt does not give %s (for %s) on %s" % (
                PROGRAM_PACKAGES[program][platform], program, platform)
        ssh = "openssh-client" if platform in _DPKG else "openssh-clients"
        assert ssh in active, "bindep.txt does not give %s on %s" % (ssh, platform)


def test_meta_execution_environment_points_at_the_requirement_files() -> None:
    meta = yaml.safe_load((REPO_ROOT / "meta" / "execution-environment.yml").read_text(encoding="utf-8"))
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}


# ----------------------------------------------------------------------------- ansible-builder


def _check_introspection(pip_file: Path, bindep_file: Path) -> None:
    pip_lines = {line.split("#", 1)[0].strip() for line in pip_file.read_text(encoding="utf-8").splitlines()}
    for line in _requirement_lines(REPO_ROOT / "requirements.txt"):
        assert line in pip_lines, "introspection lost the Python requirement %r: %s" % (line, sorted(pip_lines))
    bindep_text = bindep_file.read_text(encoding="utf-8")
    bindep_lines = {line.split("#", 1)[0].strip() for line in bindep_text.splitlines()}
    for line in _requirement_lines(REPO_ROOT / "bindep.txt"):
        assert line in bindep_lines, "introspection lost the system requirement %r: %s" % (line, sorted(bindep_lines))
    programs = derived_programs()
    for platform in PLATFORMS:
        active = _bindep_packages(bindep_text, platform)
        for program in programs:
            package = PROGRAM_PACKAGES[program][platform]
            assert package is None or package in active, "%s missing on %s after introspection" % (package, platform)


def test_ansible_builder_introspect_of_the_installed_collection(installed: Path, tmp_path: Path) -> None:
    pip_file, bindep_file = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    out = _run([_tool("ansible-builder"), "introspect", "--write-pip", str(pip_file), "--write-bindep", str(bindep_file),
                str(installed)], env=_clean_env(installed, tmp_path))
    assert "from collection %s.%s" % (NAMESPACE, NAME) in out
    _check_introspection(pip_file, bindep_file)


def test_ansible_builder_create_makes_a_context_that_installs_the_collection(artifact: Path, tmp_path: Path) -> None:
    """``create`` (no container engine), then the galaxy and builder stages' commands run here."""
    definition = yaml.safe_load((REPO_ROOT / "execution-environment.yml").read_text(encoding="utf-8"))
    assert definition["version"] == 3
    # The definition is read where it lives: its build file paths are relative to it.
    ee_dir = tmp_path / "checkout"
    ee_dir.mkdir()
    shutil.copy2(REPO_ROOT / "execution-environment.yml", ee_dir / "execution-environment.yml")
    (ee_dir / "build" / "ee").mkdir(parents=True)
    shutil.copy2(artifact, ee_dir / "build" / "ee" / artifact.name)
    context = tmp_path / "context"
    env = _clean_env(tmp_path / "none", tmp_path)
    _run([_tool("ansible-builder"), "create", "-f", str(ee_dir / "execution-environment.yml"), "-c", str(context),
          "--output-filename", "Containerfile"], env=env)

    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile
    build = context / "_build"
    assert (build / "collections" / artifact.name).is_file(), (
        "execution-environment.yml does not copy the built collection %s into the context (galaxy.yml's version "
        "and the file named in execution-environment.yml must agree)" % artifact.name)

    # Galaxy stage: `ansible-galaxy collection install -r requirements.yml` in _build.
    stage = tmp_path / "usr-share-ansible" / "collections"
    _run([_tool("ansible-galaxy"), "collection", "install", "--offline", "-r", "requirements.yml", "-p", str(stage)],
         cwd=build, env=_clean_env(stage, tmp_path))
    manifest = json.loads((stage / "ansible_collections" / NAMESPACE / NAME / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == galaxy_version()

    # Builder stage: the introspection script the image build runs.
    pip_file, bindep_file = tmp_path / "pip.txt", tmp_path / "bindep.txt"
    _run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect", "--write-pip", str(pip_file),
          "--write-bindep", str(bindep_file), str(stage)], env=env)
    _check_introspection(pip_file, bindep_file)
