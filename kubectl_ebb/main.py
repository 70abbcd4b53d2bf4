"""`kubectl ebb`'s entry point: the arguments, and the command they name."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp

import kubectl_ebb
from ebb import keys, kube, settings
from kubectl_ebb.objects import import_dry_run, submit_job
from kubectl_ebb.output import STATES
from kubectl_ebb.refusals import refusal
from kubectl_ebb.ui import UiSettings
from kubectl_ebb.ui import serve as serve_ui
from kubectl_ebb.views import Cli, NotAnEbbJob


def _connection_flags(defaults: bool) -> argparse.ArgumentParser:
    """The flags kubectl users expect, accepted before and after the subcommand."""
    flags = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    flags.add_argument("--kubeconfig", default=default)
    flags.add_argument("--context", default=default)
    flags.add_argument("-n", "--namespace", default=default)
    flags.add_argument("-o", "--output", choices=("json", "yaml"), default=default)
    return flags


def parser() -> argparse.ArgumentParser:
    common = _connection_flags(defaults=False)
    top = argparse.ArgumentParser(
        prog="kubectl ebb",
        description=(kubectl_ebb.__doc__ or "").split("\n\n")[0],
        parents=[_connection_flags(defaults=True)],
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("queues", parents=[common], help="job queues and their jobs by state")
    sub.add_parser("ces", parents=[common], help="compute environments and their capacity")
    jobs = sub.add_parser("jobs", parents=[common], help="jobs managed by Ebb")
    jobs.add_argument("-q", "--queue")
    jobs.add_argument("--state", choices=[s.lower() for s in STATES] + list(STATES))
    jobs.add_argument("-A", "--all-namespaces", action="store_true")
    for name, text in (("why", "why a job is where it is"), ("describe", "a job's attempts")):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("job")
    for name, text in (
        ("cancel", "cancel a job not admitted (SUBMITTED, PENDING, RUNNABLE)"),
        ("terminate", "stop a job, running or not"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("job")
        cmd.add_argument("--reason", required=True)
    submit = sub.add_parser(
        "submit", parents=[common], help="submit a job from a job definition (AWS Batch SubmitJob)"
    )
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
    imports = sub.add_parser(
        "import",
        parents=[common],
        help="create or update Ebb objects from AWS Batch JSON (describe-* output, create-* "
        "and register-job-definition input)",
    )
    imports.add_argument("files", nargs="+", metavar="FILE")
    imports.add_argument(
        "--dry-run", action="store_true", help="print the objects (-o yaml|json); write nothing"
    )
    ui = sub.add_parser(
        "ui",
        parents=[common],
        help="a read-only web view of the queues, on 127.0.0.1, with your credentials",
    )
    settings.add_arguments(ui, UiSettings)
    return top


async def _run(args: argparse.Namespace) -> None:
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
            await _command(Cli(client, namespace, args.output), args)
        except kube.ApiError as exc:
            if not exc.forbidden:
                raise
            raise SystemExit(refusal(args, namespace, exc)) from None


async def _command(cli: Cli, args: argparse.Namespace) -> None:
    match args.command:
        case "queues":
            await cli.queues()
        case "ces":
            await cli.ces()
        case "jobs":
            await cli.jobs(args.queue, args.state, args.all_namespaces)
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "import" and args.dry_run:
        import_dry_run(args)
        return 0
    try:
        asyncio.run(_run(args))
    except (kube.ConfigError, NotAnEbbJob, kube.ApiError, settings.SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
