"""The container image's Dockerfile, checked without a Docker engine (run by
scripts/check-deploy): hadolint, and what the image must be for the chart and the README."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / "target" / "py")) / "bin"


def instructions():
    """(instruction, arguments) per line, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages():
    """The instructions of each stage, by stage."""
    result, current = [], None
    for word, rest in instructions():
        if word == "FROM":
            current = [(word, rest)]
            result.append(current)
        elif current is not None:
            current.append((word, rest))
    return result


def test_hadolint_finds_nothing():
    done = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_build_stage_builds_locked_from_the_committed_artifact_without_node():
    build, run = stages()
    text = " ".join(rest for _, rest in build)
    assert "cargo build --release --locked" in text
    # The build stage's instructions, comments dropped ("node-to-node" there is MQTT's, not Node.js).
    assert not re.search(r"\b(npm|node|npx|solc)\b", text), text
    copies = [rest.split() for word, rest in build if word == "COPY"]
    for args in copies:
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert any("contracts/artifacts" in a for args in copies for a in args)
    assert (ROOT / "contracts" / "artifacts" / "Certification.json").is_file()


def test_the_image_runs_bal_serve_unprivileged_with_a_healthcheck_and_a_data_volume():
    _, run = stages()
    words = dict((w, r) for w, r in run)
    user = words["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root user (runAsNonRoot can check it)"
    assert "nonroot" in run[0][1] or "distroless" in run[0][1]
    health = words["HEALTHCHECK"]
    assert re.search(r'CMD \["/usr/local/bin/bal", "health"\]', health), health
    assert yaml.safe_load(words["ENTRYPOINT"]) == ["/usr/local/bin/bal"]
    assert yaml.safe_load(words["CMD"]) == ["serve"]
    assert yaml.safe_load(words["VOLUME"]) == ["/var/lib/bal"]
    assert "BAL_DATA_DIR=/var/lib/bal" in words["ENV"]
    exposed = {int(p) for p in words["EXPOSE"].split()}
    # The default listeners (bal config default), the chart's metrics and MQTT cluster ports.
    assert {8443, 8883, 9090, 5363} <= exposed
    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "bal" / "values.yaml").read_text())
    assert chart["podSecurityContext"]["runAsUser"] == int(user)


def test_the_build_stage_has_protoc():
    """rmqtt's node-to-node gRPC (the MQTT cluster) compiles its protocol with protoc."""
    build, _ = stages()
    runs = " ".join(rest for word, rest in build if word == "RUN")
    assert re.search(r"apt-get install .*protobuf-compiler=", runs), runs
    first_build = next(i for i, (w, r) in enumerate(build) if w == "RUN" and "cargo build" in r)
    first_protoc = next(i for i, (w, r) in enumerate(build) if w == "RUN" and "protobuf-compiler" in r)
    assert first_protoc < first_build


def test_the_build_context_leaves_out_build_output_and_packages():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for needed in ["target/", "node_modules/", "**/node_modules/", ".git/"]:
        assert needed in ignored, needed
    for kept in ["crates/", "contracts/", "Cargo.lock"]:
        assert kept not in ignored


def test_the_binary_needs_only_what_the_distroless_cc_base_has():
    """glibc, libm and libgcc_s: distroless/cc carries them; anything more would not start."""
    bal = os.environ.get("BAL_BIN", str(ROOT / "target" / "debug" / "bal"))
    done = subprocess.run(["ldd", bal], capture_output=True, text=True, check=True)
    libraries = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    allowed = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "/lib64/ld-linux-x86-64.so.2"}
    assert libraries <= allowed, libraries - allowed


def test_what_the_build_stage_copies_is_enough_to_build_bal(tmp_path):
    """The build stage's COPY lines, replayed into an empty folder, then `cargo check --locked`
    of the binary there: a file the build needs and the image leaves out (an include_str!, a
    crate) fails here rather than in the operator's docker build."""
    build, _ = stages()
    context = tmp_path / "context"
    for word, rest in build:
        if word != "COPY":
            continue
        *sources, destination = rest.split()
        for source in sources:
            src = ROOT / source
            # `COPY a b ./` keeps the names; `COPY crates crates` names the folder.
            dst = context / source if destination in ("./", ".") else context / destination
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target", "node_modules"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    done = subprocess.run(
        ["cargo", "check", "--locked", "--offline", "--bin", "bal", "-p", "bal"],
        cwd=context,
        env=dict(os.environ, CARGO_TARGET_DIR=target),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
