"""The ``modeldeploy`` command: run the operator, and the user's commands around kubectl."""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from modeldeploy import __version__
from modeldeploy.commands import CommandError, control, export, predict, status

# name -> (module with add_arguments/run, one-line help)
USER_COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "export": (export, "convert a scikit-learn model to ONNX, check it, write its profile"),
    "status": (status, "show a ModelDeployment: phase, conditions, canary, analysis, history"),
    "promote": (control, "promote the canary under way now"),
    "abort": (control, "roll the canary under way back"),
    "predict": (predict, "send an Open Inference Protocol request and print the answer"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy", description="Run machine-learning models in production on Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    operator = commands.add_parser("operator", help="run the operator (kopf)")
    try:
        from modeldeploy.runner import add_arguments
    except ModuleNotFoundError:
        # An install without the operator extra (e.g. only modeldeploy[export]) still exports.
        operator.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    else:
        add_arguments(operator)
    for name, (module, summary) in USER_COMMANDS.items():
        module.add_arguments(
            commands.add_parser(name, help=summary, description=_description(module, summary))
        )
    return parser


def _description(module: ModuleType, summary: str) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.split("\n\n", 1)[1].replace("\n", " ") if "\n\n" in doc else summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        from modeldeploy.runner import run_operator

        return run_operator(args)
    module, _ = USER_COMMANDS[args.command]
    try:
        code: int = module.run(args)
    except CommandError as error:
        print(f"modeldeploy {args.command}: error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        extra = "export" if args.command == "export" else "operator"
        print(
            f"modeldeploy {args.command}: error: {error.name} is not installed; install "
            f"modeldeploy[{extra}]",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly, as other CLIs do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
