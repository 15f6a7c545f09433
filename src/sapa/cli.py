"""The ``sapa`` command line: ``sapa <command> ...`` (also ``python -m sapa``).

Each command lives in its own module under ``sapa.experiments`` exposing
``add_arguments(parser)`` and ``main(args) -> int``, or, when its options depend on an earlier
option (``sapa compare --task``), ``parse_args(argv, prog)`` instead of ``add_arguments``; it is
imported only when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "compare": ("sapa.experiments.compare", "train upsamplers side by side (any task) and report them"),
    "flops": ("sapa.experiments.flops", "FLOPs and parameters of every upsampler (Table 1)"),
    "export": ("sapa.experiments.export", "export an upsampler or a trained model to ONNX and "
                                          "check it in ONNX Runtime"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sapa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_module=module)
        # arguments are added lazily in main() so that --help of one command imports one module
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in COMMANDS:
        mod = importlib.import_module(COMMANDS[argv[0]][0])
        if hasattr(mod, "parse_args"):
            return mod.main(mod.parse_args(argv[1:], prog=f"sapa {argv[0]}")) or 0
        sub = argparse.ArgumentParser(prog=f"sapa {argv[0]}", description=COMMANDS[argv[0]][1])
        mod.add_arguments(sub)
        return mod.main(sub.parse_args(argv[1:])) or 0
    parser.parse_args(argv)  # prints usage / errors
    return 2


if __name__ == "__main__":
    sys.exit(main())
