"""`kubectl ebb`'s entry point: the arguments, and the command they name."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import aiohttp
import structlog

import ebb
import kubectl_ebb
from ebb import keys, kube, settings
from kubectl_ebb import completion, jsonpath, listings, version
from kubectl_ebb.objects import import_dry_run, submit_job
from kubectl_ebb.output import STATES, OutputError, OutputFormat, emit
from kubectl_ebb.refusals import refusal
from kubectl_ebb.ui import UiSettings
from kubectl_ebb.ui import serve as serve_ui
from kubectl_ebb.views import Cli, NotAnEbbJob

LISTINGS = {"queues": listings.QUEUES, "ces": listings.CES, "jobs": listings.JOBS}
# The -o formats each command prints; the listings take every one (output.FORMATS).
_DOCUMENT_FORMATS = ("json", "yaml", "jsonpath")
_OUTPUTS = {
    **{command: ("json", "yaml", "name", "wide", "jsonpath") for command in LISTINGS},
    **{command: _DOCUMENT_FORMATS for command in ("why", "describe", "submit", "version")},
    "import": ("json", "yaml"),
}


def _connection_flags(defaults: bool) -> argparse.ArgumentParser:
    """The flags kubectl users expect, accepted before and after the subcommand."""
    flags = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    flags.add_argument("--kubeconfig", default=default, help="kubeconfig file (not merged)")
    flags.add_argument("--context", default=default, help="the kubeconfig context to use")
    flags.add_argument("-n", "--namespace", default=default)
    flags.add_argument(
        "-o", "--output", default=default, help="json|yaml|name|wide|jsonpath=TEMPLATE"
    )
    return flags


def _listing_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-l", "--selector", help="label selector, as kubectl's (-l a=b,c!=d)")
    flags.add_argument(
        "-A", "--all-namespaces", action="store_true", help="jobs of every namespace"
    )
    flags.add_argument("-w", "--watch", action="store_true", help="then print what changes")
    return flags


def parser() -> argparse.ArgumentParser:
    common = _connection_flags(defaults=False)
    listing = _listing_flags()
    top = argparse.ArgumentParser(
        prog="kubectl ebb",
        description=(kubectl_ebb.__doc__ or "").split("\n\n")[0],
        parents=[_connection_flags(defaults=True)],
    )
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common, *parents], help=text, description=text)

    command("queues", "job queues and their jobs by state", listing)
    command("ces", "compute environments and their capacity", listing)
    jobs = command("jobs", "jobs managed by Ebb", listing)
    jobs.add_argument("-q", "--queue")
    jobs.add_argument("--state", choices=[s.lower() for s in STATES] + list(STATES))
    for name, text in (("why", "why a job is where it is"), ("describe", "a job's attempts")):
        command(name, text).add_argument("job")
    for name, text in (
        ("cancel", "cancel a job not admitted (SUBMITTED, PENDING, RUNNABLE)"),
        ("terminate", "stop a job, running or not"),
    ):
        cmd = command(name, text)
        cmd.add_argument("job")
        cmd.add_argument("--reason", required=True)
    submit = command("submit", "submit a job from a job definition (AWS Batch SubmitJob)")
    submit.add_argument("--job-name", required=True)
    submit.add_argument("--job-queue", required=True)
    submit.add_argument("--job-definition", required=True, help="NAME (latest) or NAME:REVISION")
    submit.add_argument("--parameters", nargs="+", metavar="KEY=VALUE")
    submit.add_argument("--array-size", type=int)
    submit.add_argument("--depends-on", nargs="+", metavar="JOB[:TYPE]")
    submit.add_argument("--share", help="share identifier (fair share)")
    submit.add_argument("--scheduling-priority", type=int)
    submit.add_argument("--retry-strategy", help='JSON, e.g. {"attempts": 3}')
    submit.add_argument("--timeout", type=int, help="attempt duration in seconds")
    submit.add_argument("--container-overrides", help="JSON list of {name, image, ...}")
    imports = command(
        "import",
        "create or update Ebb objects from AWS Batch JSON (describe-* output, create-* "
        "and register-job-definition input)",
    )
    imports.add_argument("files", nargs="+", metavar="FILE")
    imports.add_argument(
        "--dry-run", action="store_true", help="print the objects (-o yaml|json); write nothing"
    )
    versions = command("version", "this plugin's version, the cluster's and Ebb's")
    versions.add_argument("--client", action="store_true", help="only this plugin's version")
    versions.add_argument(
        "--ebb-namespace",
        default=version.EBB_NAMESPACE,
        help="where the Ebb scheduler's Service is (its ebb_build_info gives its version)",
    )
    shells = command("completion", "print a shell completion script (bash or zsh)")
    shells.add_argument("shell", choices=sorted(completion.SCRIPTS))
    ui = command("ui", "a read-only web view of the queues, on 127.0.0.1, with your credentials")
    settings.add_arguments(ui, UiSettings)
    return top


def output_format(args: argparse.Namespace) -> OutputFormat | None:
    """The parsed -o, refused where the command has no such printer."""
    if not args.output:
        return None
    output = OutputFormat.parse(args.output)
    allowed = _OUTPUTS.get(args.command, ())
    if output.kind not in allowed:
        raise OutputError(
            f"kubectl ebb {args.command} does not print -o {output.kind}"
            + (f"; it prints -o {', '.join(allowed)}" if allowed else "")
        )
    return output


def _selection(args: argparse.Namespace, namespace: str) -> listings.Selection:
    if args.command != "jobs":
        return listings.Selection(label_selector=args.selector)
    where = None if args.all_namespaces else namespace
    return listings.job_selection(where, args.queue, args.state, args.selector)


async def _run(args: argparse.Namespace, output: OutputFormat | None) -> None:
    ui = (
        settings.from_arguments(UiSettings, vars(args), os.environ)
        if args.command == "ui"
        else None
    )
    access = kube.load_access(args.kubeconfig, args.context, os.environ)
    namespace = args.namespace or access.namespace
    if ui is not None:
        await serve_ui(ui, access, namespace)
        return
    async with kube.KubeClient(access, user_agent="kubectl-ebb") as client:
        try:
            await _command(client, Cli(client, namespace, output), args, output)
        except kube.ApiError as exc:
            if not exc.forbidden:
                raise
            raise SystemExit(refusal(args, namespace, exc)) from None


async def _command(
    client: kube.KubeClient, cli: Cli, args: argparse.Namespace, output: OutputFormat | None
) -> None:
    match args.command:
        case "queues" | "ces" | "jobs":
            selection = _selection(args, cli.namespace)
            if args.watch:
                _quiet_logs()
            await listings.show(client, LISTINGS[args.command], selection, output, args.watch)
        case "why":
            await cli.why(args.job)
        case "describe":
            await cli.describe(args.job)
        case "cancel":
            await cli.stop(args.job, keys.CANCEL, args.reason, "cancel")
        case "terminate":
            await cli.stop(args.job, keys.TERMINATE, args.reason, "termination")
        case "submit":
            await cli.submit(submit_job(args))
        case "import":
            await cli.import_objects(args.files)
        case "version":
            found = {"clientVersion": ebb.version()}
            if output is None:
                print(version.text(found), flush=True)  # before the server may fail
            found |= await version.server_versions(client, args.ebb_namespace)
            emit(found, output, version.text(found).split("\n", 1)[1])


def _quiet_logs() -> None:
    """The watch's reflector logs through structlog: warnings only, on stderr, so that
    stdout stays what the user asked for."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:
        completion.print_candidates(parser(), argv[1:])
        return 0
    args = parser().parse_args(argv)
    try:
        output = output_format(args)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "completion":
        print(completion.SCRIPTS[args.shell], end="")
        return 0
    if args.command == "version" and args.client:
        client_only = {"clientVersion": ebb.version()}
        emit(client_only, output, version.text(client_only))
        return 0
    if args.command == "import" and args.dry_run:
        import_dry_run(args)
        return 0
    try:
        asyncio.run(_run(args, output))
    except KeyboardInterrupt:
        return 130  # ^C ends a --watch
    except jsonpath.JsonPathError as exc:
        print(f"error: error executing jsonpath {args.output!r}: {exc}", file=sys.stderr)
        return 1
    except (kube.ConfigError, NotAnEbbJob, kube.ApiError, settings.SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return 1
    return 0


def kubectl_complete() -> None:
    """`kubectl_complete-ebb`: the hook kubectl (1.26+) runs to complete `kubectl ebb`."""
    completion.print_candidates(parser(), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
