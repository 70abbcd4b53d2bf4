"""`kubectl ebb`'s output as kubectl prints it: jsonpath templates (the answers are what
kubectl 1.36 prints for the same template and data), reasons cut at word boundaries, the
-o values, the merged KUBECONFIG, and shell completion. (Against the real API server:
tests/e2e/test_kubectl_plugin.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ebb import kube
from ebb.kube.config import Kubeconfig, load_access
from kubectl_ebb import completion, jsonpath
from kubectl_ebb.completion import _positionals
from kubectl_ebb.listings import QUEUES, Watcher
from kubectl_ebb.main import parser
from kubectl_ebb.output import OutputError, OutputFormat, shorten
from kubectl_ebb.views import _shortened

LIST: dict[str, Any] = {
    "kind": "List",
    "items": [
        {
            "metadata": {"name": "high", "annotations": {"ebb.dev/state": "RUNNABLE"}},
            "spec": {"priority": 10, "order": [{"ce": "spot"}, {"ce": "od"}]},
            "status": {"status": "VALID", "jobs": {"RUNNING": 2}},
        },
        {
            "metadata": {"name": "low"},
            "spec": {"priority": 1, "order": [{"ce": "od"}]},
            "status": {"status": "INVALID"},
        },
    ],
}


@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ("{.items[*].metadata.name}", "high low"),
        ('{range .items[*]}{.metadata.name}{"\\n"}{end}', "high\nlow\n"),
        (
            '{range .items[*]}{.metadata.name}{"\\t"}{.spec.priority}{"\\n"}{end}',
            "high\t10\nlow\t1\n",
        ),
        ("{.items[0].metadata.name}", "high"),
        ("{.items[-1].metadata.name}", "low"),
        ("{.items[0:1].metadata.name}", "high"),
        ("{.items[*].metadata.annotations.ebb\\.dev/state}", "RUNNABLE"),
        ("{.items[0].status.jobs}", '{"RUNNING":2}'),
        ("{.items[1].spec.order}", '[{"ce":"od"}]'),
        ('{.items[?(@.status.status=="VALID")].metadata.name}', "high"),
        ("{.items[?(@.spec.priority>5)].metadata.name}", "high"),
        ("{.items[?(@.status.jobs)].metadata.name}", "high"),
        ("{..ce}", "spot od od"),
        ("{.items[*]['metadata.name']}", "high low"),
        ("{.items[*]['metadata.name', 'spec.priority']}", "high low 10 1"),
        (
            "{.items[0]['status', 'spec']}",
            '{"jobs":{"RUNNING":2},"status":"VALID"} '
            '{"order":[{"ce":"spot"},{"ce":"od"}],"priority":10}',
        ),
        ("kind is {.kind}", "kind is List"),
        ("{.missing}{.items[*].spec.missing}", ""),
        ("{$.kind}", "List"),
        ("{range .items[*]}[{range .spec.order[*]}{.ce},{end}]{end}", "[spot,od,][od,]"),
    ],
)
def test_jsonpath_prints_what_kubectl_prints(template: str, printed: str) -> None:
    assert jsonpath.parse(template).render(LIST) == printed


@pytest.mark.parametrize(
    "template", ["{range .items[*]}{.x}", "{end}", "{.items[}", '{"open}', "{.a b}"]
)
def test_a_jsonpath_that_does_not_parse_is_refused(template: str) -> None:
    with pytest.raises(OutputError, match="error parsing jsonpath"):
        OutputFormat.parse(f"jsonpath={template}")


def test_an_index_out_of_bounds_is_an_error_as_in_kubectl() -> None:
    with pytest.raises(jsonpath.JsonPathError, match="index 5, length 2"):
        jsonpath.parse("{.items[5].metadata.name}").render(LIST)


def test_output_formats_as_kubectl_names_them() -> None:
    assert OutputFormat.parse("wide").kind == "wide"
    assert OutputFormat.parse("jsonpath={.kind}").kind == "jsonpath"
    with pytest.raises(OutputError, match='output format "table", allowed formats are: json'):
        OutputFormat.parse("table")


def test_a_reason_is_cut_at_a_word_boundary_with_an_ellipsis() -> None:
    reason = "position 3 in queue high: waiting for 4 vCPUs in spot (8/8 vCPUs in use)"
    assert shorten(reason, 80) == reason
    assert shorten(reason, 40) == "position 3 in queue high: waiting for 4…"
    assert shorten(reason, 36) == "position 3 in queue high: waiting…"
    assert shorten("supercalifragilistic", 10) == "supercali…"  # one word: cut inside
    assert shorten("a  b\n c", 10) == "a b c"


@given(st.text(alphabet="ab ,:", max_size=60), st.integers(min_value=2, max_value=40))
def test_shortened_text_fits_and_never_ends_in_a_cut_word(text: str, width: int) -> None:
    out = shorten(text, width)
    assert len(out) <= width
    words = " ".join(text.split()).split(" ")
    if out.endswith("…") and " " in out:
        # Every word before the ellipsis is a whole word of the text.
        kept = out[:-1].split(" ")
        assert all(w.rstrip(" ,;:—-") in (x.rstrip(" ,;:—-") for x in words) for w in kept)


def kubeconfig(path: Path, **doc: Any) -> Path:
    path.write_text(yaml.safe_dump({k.replace("_", "-"): v for k, v in doc.items()}))
    return path


def test_kubeconfig_files_are_merged_as_kubectl_merges_them(tmp_path: Path) -> None:
    """First file wins a name, current-context is the first one set; a relative path is
    relative to the file that holds it."""
    (tmp_path / "b").mkdir()
    a = kubeconfig(
        tmp_path / "a",
        current_context="dev",
        clusters=[{"name": "c", "cluster": {"server": "https://first:6443"}}],
    )
    b = kubeconfig(
        tmp_path / "b" / "config",
        current_context="prod",
        clusters=[
            {"name": "c", "cluster": {"server": "https://second:6443"}},
            {
                "name": "p",
                "cluster": {
                    "server": "https://prod:6443",
                    "proxy-url": "http://proxy:3128",
                    "tls-server-name": "kubernetes",
                },
            },
        ],
        users=[{"name": "u", "user": {"tokenFile": "token"}}],
        contexts=[
            {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}},
            {"name": "prod", "context": {"cluster": "p", "user": "u"}},
        ],
    )
    (tmp_path / "b" / "token").write_text("secret\n")
    environ = {"KUBECONFIG": os.pathsep.join([str(a), str(tmp_path / "missing"), str(b)])}
    dev = load_access(None, None, environ)
    assert (dev.server, dev.namespace, dev.context_name) == ("https://first:6443", "team", "dev")
    assert dev.tokens.file == tmp_path / "b" / "token"
    prod = load_access(None, "prod", environ)
    assert (prod.proxy_url, prod.tls_server_name) == ("http://proxy:3128", "kubernetes")
    with pytest.raises(kube.ConfigError, match="no context named 'nope'"):
        load_access(None, "nope", environ)
    # --kubeconfig names one file, not merged: a has no contexts.
    with pytest.raises(kube.ConfigError, match="no context named 'dev'"):
        load_access(str(a), None, environ)
    assert sorted(Kubeconfig.load([a, b]).entries["contexts"]) == ["dev", "prod"]


def test_a_socks_proxy_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config",
        current_context="x",
        clusters=[{"name": "c", "cluster": {"server": "https://s", "proxy-url": "socks5://p"}}],
        contexts=[{"name": "x", "context": {"cluster": "c"}}],
    )
    with pytest.raises(kube.ConfigError, match="proxy-url 'socks5://p' is not supported"):
        load_access(str(path), None, {})


@pytest.mark.parametrize(
    ("typed", "offered", "directive"),
    [
        (["qu"], ["queues\tjob queues and their jobs by state"], completion.NO_FILE),
        (["jobs", "-o", ""], ["json", "yaml", "name", "wide", "jsonpath="], 6),
        (["jobs", "--state", ""], ["SUBMITTED", "PENDING", "RUNNABLE"], completion.NO_FILE),
        (["completion", ""], ["bash", "zsh"], completion.NO_FILE),
        (["import", ""], [], completion.DEFAULT),
        (["--kubeconfig", ""], [], completion.DEFAULT),
    ],
)
def test_completion_candidates(typed: list[str], offered: list[str], directive: int) -> None:
    found, got = completion.candidates(parser(), typed)
    assert got == directive
    assert all(any(f.startswith(o) for f in found) for o in offered), found


def test_completion_offers_a_commands_flags() -> None:
    found, _ = completion.candidates(parser(), ["jobs", "--"])
    assert {"--watch", "--selector", "--all-namespaces", "--queue", "--state"} <= set(found)


def test_the_bash_script_completes_through_kubectl_ebb() -> None:
    """The script `kubectl ebb completion bash` prints, run by bash: it asks the
    installed `kubectl-ebb __complete` (the venv's bin on PATH) and fills COMPREPLY."""
    script = subprocess.run(
        [sys.executable, "-m", "kubectl_ebb.main", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    probe = script + "COMP_WORDS=(kubectl-ebb jobs --st); COMP_CWORD=2; _kubectl_ebb\n"
    probe += 'echo "${COMPREPLY[@]}"\n'
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    assert out.stdout.strip() == "--state", out.stderr


def test_describe_says_when_it_shows_the_last_attempts_only() -> None:
    kept = [{"pod": f"p-{i}"} for i in range(20)]
    assert _shortened(kept, None, {"failed": 199, "succeeded": 1}) == (
        "last 20 of 200 attempts (the Job keeps the latest)"
    )
    assert _shortened(kept, None, {"failed": 20}) == ""
    gang = [{"pod": f"p-{i}", "attempt": 4 + i // 10} for i in range(20)]
    assert _shortened(gang, 5, {}) == "attempts 4-5 of 5 (the Job keeps the latest)"
    assert _shortened([{"pod": "p", "attempt": 1}], 1, {}) == ""


def test_watch_prints_a_row_only_when_it_changed(capsys: pytest.CaptureFixture[str]) -> None:
    def queue(running: int, usage: int) -> dict[str, Any]:
        return {
            "metadata": {"name": "high", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "priority": 10,
                "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "spot"}],
            },
            "status": {"jobs": {"RUNNING": running}, "shareUsage": {"vcpuSeconds": usage}},
        }

    watcher = Watcher(QUEUES, None)
    watcher.start([queue(1, 0)])
    watcher.show(queue(1, 50))  # only the share usage moved: no column changed
    watcher.show(queue(2, 60))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["NAME", "high", "high"]
    assert [line.split()[9] for line in lines[1:]] == ["1", "2"]  # RUNNING


def test_completion_tells_a_flags_value_from_an_argument() -> None:
    assert _positionals(parser(), ["-n", "team", "--reason=x", "job", "-o", "json"]) == ["job"]
