"""The ``modeldeploy`` command: run the operator (more subcommands join as they are built)."""

from __future__ import annotations

import argparse
import sys

from modeldeploy import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy", description="Run machine-learning models in production on Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    operator = commands.add_parser("operator", help="run the operator (kopf)")
    from modeldeploy.runner import add_arguments

    add_arguments(operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        from modeldeploy.runner import run_operator

        return run_operator(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
