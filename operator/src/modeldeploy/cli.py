"""The ``modeldeploy`` command: run the operator, and the user's commands around kubectl."""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from modeldeploy import __version__
from modeldeploy.commands import CommandError, control, export, predict, status

# name -> (module with add_arguments/run, one-line help, description)
USER_COMMANDS: dict[str, tuple[ModuleType, str, str]] = {
    "export": (
        export,
        "convert a scikit-learn model to ONNX, check it, write its profile",
        "Convert a fitted scikit-learn model to ONNX with skl2onnx, check the ONNX model "
        "against scikit-learn on the sample (labels identical, probabilities and regression "
        "outputs within the tolerance), write it with its training profile, and print both "
        "sha256 and a ModelDeployment ready to apply. Loading a joblib or pickle file runs "
        "its code: export only models you trust.",
    ),
    "status": (
        status,
        "show a ModelDeployment: phase, conditions, canary, analysis, history",
        "Show a ModelDeployment's state: phase, replicas, URL, the stable model, the canary "
        "under way (weight, step, failed checks, the last analysis values), conditions and "
        "the last rollouts.",
    ),
    "promote": (
        control,
        "promote the canary under way now",
        "Promote the canary under way now, skipping its remaining steps: sets the "
        "serving.modeldeploy.io/promote annotation, which the operator acts on.",
    ),
    "abort": (
        control,
        "roll the canary under way back",
        "Roll the canary under way back to the stable model: sets the "
        "serving.modeldeploy.io/abort annotation, which the operator acts on.",
    ),
    "predict": (
        predict,
        "send an Open Inference Protocol request and print the answer",
        "Send rows to a served model over the Open Inference Protocol (v2) and print the "
        "response. The input's name, datatype and shape come from the model's metadata. "
        "Without --url the ModelDeployment's status.url is used: the in-cluster Service, "
        "reachable from inside the cluster; from outside, run kubectl port-forward "
        "svc/NAME 8080:8080 and pass --url http://127.0.0.1:8080.",
    ),
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
    for name, (module, summary, description) in USER_COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=summary, description=description))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        from modeldeploy.runner import run_operator

        return run_operator(args)
    module, _, _ = USER_COMMANDS[args.command]
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
