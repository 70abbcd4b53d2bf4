"""Shell completion, by Cobra's protocol (what kubectl speaks): the words typed so far go
to `kubectl-ebb __complete WORD... PARTIAL`, which prints one candidate a line and last
`:DIRECTIVE`. kubectl (1.26+) asks the same of an executable named
`kubectl_complete-ebb` (installed with the plugin), so `kubectl ebb <TAB>` completes in
kubectl's own completion; `kubectl ebb completion bash|zsh` prints a script for
`kubectl-ebb` typed directly.

Candidates: commands, flags, the values of -o and --state, and from the cluster (with the
--kubeconfig/--context/-n already typed) namespaces, contexts, queues and Ebb's jobs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import aiohttp

from ebb import keys, kube
from ebb.kube.config import Kubeconfig, kubeconfig_paths
from kubectl_ebb.output import STATES

# Cobra's ShellCompDirective values.
DEFAULT = 0  # the shell may complete file names
NO_SPACE = 2
NO_FILE = 4

_JOB_ARGUMENT = ("why", "describe", "cancel", "terminate")
_OUTPUTS = ("json", "yaml", "name", "wide", "jsonpath=")

BASH = """\
# bash completion for kubectl-ebb; `source <(kubectl-ebb completion bash)`.
# (`kubectl ebb` completes through kubectl's own completion and kubectl_complete-ebb.)
_kubectl_ebb() {
    local cur="${COMP_WORDS[COMP_CWORD]}" out directive
    out=$(kubectl-ebb __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null) || return
    directive=${out##*:}
    out=$(printf '%s\\n' "$out" | sed '$d' | cut -f1)
    if [[ -z $out && $directive == 0 ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -W "$out" -- "$cur"))
    if (( directive & 2 )); then compopt -o nospace; fi
}
complete -F _kubectl_ebb kubectl-ebb
"""

ZSH = """\
#compdef kubectl-ebb
# zsh completion for kubectl-ebb; `source <(kubectl-ebb completion zsh)` after compinit.
# (`kubectl ebb` completes through kubectl's own completion and kubectl_complete-ebb.)
_kubectl_ebb() {
    local -a lines candidates
    local directive
    lines=("${(@f)$(kubectl-ebb __complete "${(@)words[2,CURRENT-1]}" "${words[CURRENT]}" \\
        2>/dev/null)}")
    directive=${lines[-1]#:}
    candidates=("${(@)${(@)lines[1,-2]}%%$'\\t'*}")
    if (( ${#candidates} == 0 && directive == 0 )); then
        _files
        return
    fi
    if (( directive & 2 )); then
        compadd -S '' -- "${candidates[@]}"
    else
        compadd -- "${candidates[@]}"
    fi
}
compdef _kubectl_ebb kubectl-ebb
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _takes_value(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    for action in parser._actions:
        if flag in action.option_strings and action.nargs != 0:
            return action
    return None


def _positionals(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str]:
    """The words that are not flags nor a flag's value."""
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = "=" not in word and _takes_value(parser, word) is not None
        else:
            out.append(word)
    return out


def _typed(words: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """The connection flags already typed (--kubeconfig, --context, -n), for lookups."""
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        action = _takes_value(parser, flag)
        if action is None:
            continue
        if not eq and i + 1 < len(words):
            value = words[i + 1]
        found[action.dest] = value
    return found


async def _names(words: Sequence[str], parser: argparse.ArgumentParser, what: str) -> list[str]:
    typed = _typed(words, parser)
    access = kube.load_access(typed.get("kubeconfig"), typed.get("context"), os.environ)
    namespace = typed.get("namespace") or access.namespace
    async with kube.KubeClient(access, user_agent="kubectl-ebb", request_timeout=5) as client:
        match what:
            case "namespaces":
                items = (await client.list(kube.NAMESPACES)).items
            case "queues":
                items = (await client.list(kube.JOB_QUEUES)).items
            case _:
                items = (
                    await client.list(kube.JOBS, namespace, label_selector=keys.QUEUE_LABEL)
                ).items
    return sorted(str(i["metadata"]["name"]) for i in items)


def _contexts(words: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    paths = kubeconfig_paths(_typed(words, parser).get("kubeconfig"), os.environ)
    return sorted(Kubeconfig.load(paths).entries["contexts"]) if paths else []


def _value_candidates(
    dest: str, words: Sequence[str], top: argparse.ArgumentParser
) -> tuple[list[str], int]:
    match dest:
        case "output":
            return list(_OUTPUTS), NO_FILE | NO_SPACE
        case "state":
            return list(STATES), NO_FILE
        case "kubeconfig":
            return [], DEFAULT
        case "context":
            return _contexts(words, top), NO_FILE
        case "namespace":
            return asyncio.run(_names(words, top, "namespaces")), NO_FILE
        case "queue":
            return asyncio.run(_names(words, top, "queues")), NO_FILE
    return [], NO_FILE


def candidates(top: argparse.ArgumentParser, args: Sequence[str]) -> tuple[list[str], int]:
    """What may come next after `args[:-1]`, `args[-1]` being the word being typed."""
    *words, partial = args or [""]
    commands = _subcommands(top)
    command = next((w for w in words if w in commands), None)
    parser = commands[command] if command else top
    if words:
        action = _takes_value(parser, words[-1]) or _takes_value(top, words[-1])
        if action is not None:
            return _value_candidates(action.dest, words, top)
    if partial.startswith("-"):
        flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
        return sorted(set(flags)), NO_FILE
    if command is None:
        return [f"{name}\t{p.description or ''}".rstrip() for name, p in commands.items()], NO_FILE
    positional = _positionals(parser, words[words.index(command) + 1 :])
    if command == "completion" and not positional:
        return list(SCRIPTS), NO_FILE
    if command == "import":
        return [], DEFAULT
    if command in _JOB_ARGUMENT and not positional:
        return asyncio.run(_names(words, top, "jobs")), NO_FILE
    return [], NO_FILE


def print_candidates(top: argparse.ArgumentParser, args: Sequence[str]) -> None:
    try:
        found, directive = candidates(top, args)
    except (kube.ConfigError, kube.ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        # A shell completing must not print an error into the command line.
        print(f"completion: {exc}", file=sys.stderr)
        found, directive = [], NO_FILE
    for line in found:
        print(line)
    print(f":{directive}")
