"""hack/build-binaries.sh is quiet: Go's output goes to a log, one progress line per part,
and a failed build shows the end of the log. Run against a stand-in `go` that prints what
a cold build prints (hundreds of "go: downloading" lines)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines()
    if re.match(r"^[A-Z_]+=", line)
)
# `go env GOVERSION`, `go mod download -json M` (its Dir, holding kwok's stage files) and
# `go install` (300 lines of chatter, then the binary in $GOBIN, or a failure).
FAKE_GO = """#!/usr/bin/env bash
case "$1" in
  env) echo go1.25.1 ;;
  mod) mkdir -p "$FAKE_MOD/kustomize/stage/pod"; printf '{\\n  "Dir": "%s",\\n}\\n' "$FAKE_MOD" ;;
  install)
    for i in $(seq 300); do echo "go: downloading example.com/m$i v1.0.$i" >&2; done
    [ -z "$FAKE_GO_FAIL" ] || { echo "compile: $FAKE_GO_FAIL" >&2; exit 1; }
    touch "$GOBIN/kwok" && chmod +x "$GOBIN/kwok" ;;
esac
"""


def build(
    tmp: Path, *args: str, fail: str = "", helm_cached: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs the script with etcd, Kubernetes and (unless told not) helm cached and kwok
    to build."""
    cache, fake_bin = tmp / "bin-cache", tmp / "fake-go"
    cached = {
        f"etcd-{VERSIONS['ETCD_VERSION']}": ["etcd"],
        f"kubernetes-{VERSIONS['KUBERNETES_VERSION']}": [
            "kube-apiserver",
            "kube-scheduler",
            "kube-controller-manager",
            "kubectl",
        ],
        **({f"helm-{VERSIONS['HELM_VERSION']}": ["helm"]} if helm_cached else {}),
    }
    for part, binaries in cached.items():
        (cache / part).mkdir(parents=True, exist_ok=True)
        for name in binaries:
            (cache / part / name).touch(mode=0o755)
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "go").write_text(FAKE_GO)
    (fake_bin / "go").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "EBB_BIN_CACHE": str(cache),
        "EBB_BUILD_DIR": str(tmp / "build"),
        "FAKE_MOD": str(tmp / "module"),
        "FAKE_GO_FAIL": fail,
    }
    env.pop("EBB_BUILD_VERBOSE", None)
    return subprocess.run(
        [str(ROOT / "hack" / "build-binaries.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_build_prints_one_line_per_part_and_logs_go_output(tmp_path: Path) -> None:
    done = build(tmp_path, "--print-path")
    assert done.returncode == 0, done.stderr
    kwok = VERSIONS["KWOK_VERSION"]
    lines = done.stderr.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("[build-binaries] building kwok once (")
    assert str(tmp_path / "build" / "build.log") in lines[0]
    assert re.fullmatch(
        rf"\[build-binaries\] kwok {kwok}: building \(.*\)… built in \d+ s", lines[1]
    )
    assert lines[2] == f"[build-binaries] control-plane binaries ready in {tmp_path / 'bin-cache'}"
    assert len((tmp_path / "build" / "build.log").read_text().splitlines()) == 300
    assert str(tmp_path / "bin-cache" / f"kwok-{kwok}") in done.stdout.splitlines()[-1].split(":")

    # Everything cached: silent with --print-path (the caller only wants the path)...
    again = build(tmp_path, "--print-path")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == done.stdout
    # ...and one line without.
    plain = build(tmp_path)
    assert plain.stderr == (
        f"[build-binaries] control-plane binaries: all cached in {tmp_path / 'bin-cache'}\n"
    )


def test_a_failed_build_shows_the_end_of_its_log(tmp_path: Path) -> None:
    done = build(tmp_path, fail="undefined: kwok.Main")
    assert done.returncode == 1
    assert "compile: undefined: kwok.Main" in done.stderr
    assert f"ERROR: kwok build failed (the last lines of {tmp_path / 'build' / 'build.log'}" in (
        done.stderr
    )
    assert done.stderr.count("go: downloading") < 30  # the log's tail, not all of it


def test_helm_is_built_only_when_asked_for(tmp_path: Path) -> None:
    """`make run` does not need helm (a long build); the tests ask for it."""
    done = build(tmp_path / "run", "--print-path", helm_cached=False)
    assert done.returncode == 0, done.stderr
    assert "helm" not in done.stderr.replace(str(tmp_path), "")
    assert f"helm-{VERSIONS['HELM_VERSION']}" in done.stdout  # where the tests look for it
    asked = build(tmp_path / "test", "--with-helm", helm_cached=False)
    assert "building kwok helm once" in asked.stderr, asked.stderr
