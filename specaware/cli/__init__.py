"""The `specaware` command. Thin: each subcommand is `specaware.cli.<command>`, imported only
when used, so `specaware sensors` does not pay for importing torch and deepspeed.

`specaware/cli/` owns the command line: every module here is named after its command and
exposes `add_arguments(parser)` and `main(args) -> int`; it parses, calls the library and prints.
Library modules never parse arguments (docs/DESIGN.md section 0).
"""
from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import os
import sys

from specaware.version import __version__

COMMANDS: dict[str, str] = {
    "sensors": "list sensors, or print one sensor's band table",
    "shard": "tile scenes into webdataset shards + manifest",
    "inspect": "summarise a shard set",
    "curate": "training-free pruning of a shard set to KEYS.json (entropy, k-means quotas)",
    "synth": "generate synthetic scenes from real measured spectra",
    "pretrain": "pretrain the masked autoencoder with DeepSpeed",
    "export": "consolidate a checkpoint into .safetensors + JSON, a hub folder, ONNX or .pt2",
    "finetune": "fine-tune a downstream head on a pretrained encoder",
    "predict": "sliding-window prediction of a full scene to GeoTIFF",
    "models": "list model variants with parameters and FLOPs per tile",
    "bench": "run the benchmarks in bench/ and print their ratios",
    "demo": "the end-to-end demo on the embedded default dataset",
    "federated": "federated fine-tuning on Flower (prompts, baselines)",
    "audit": "membership-inference audit of a fine-tuned classifier",
}

# commands that run model steps; see specaware.runtime (SPECAWARE_MALLOC=system opts out)
TRAINING_COMMANDS = {"pretrain", "finetune", "predict", "demo", "federated", "audit"}


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(k) for k in COMMANDS) + 2
    lines = "\n".join(f"  {name:<{width}}{help_}" for name, help_ in COMMANDS.items())
    top = argparse.ArgumentParser(
        prog="specaware",
        usage="specaware [--version] [-h] [--debug] COMMAND [ARGS ...]",
        description="Hyperspectral foundation models: any band set, DeepSpeed pretraining, "
        "fine-tuning heads.",
        epilog=f"commands:\n{lines}\n\n`specaware COMMAND -h` shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"specaware {__version__}")
    top.add_argument("--debug", action="store_true",
                     help="show the full traceback of an error (anywhere on the line; "
                          "or SPECAWARE_DEBUG=1)")
    return top


def command_parser(name: str, module=None) -> argparse.ArgumentParser:
    """The argument parser of `specaware NAME` (docs/INTERFACES.md's CLI table is made from it)."""
    module = module or importlib.import_module(f"specaware.cli.{name}")
    parser = argparse.ArgumentParser(prog=f"specaware {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    return parser


def _run(argv: list[str]) -> int:
    top = _top_parser()
    debug = "--debug" in argv or os.environ.get("SPECAWARE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "--version"):
        if not argv:
            top.print_help(sys.stderr)
            return 2
        top.parse_args(argv[:1])          # prints help or the version and exits 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        top.error(f"unknown command '{name}'{hint} (commands: {', '.join(COMMANDS)})")
    if name in TRAINING_COMMANDS:
        from specaware.runtime import tune_cpu_malloc
        tune_cpu_malloc()   # CPU steps halve: large tensors stop paying page faults every step
    module = importlib.import_module(f"specaware.cli.{name}")
    parser = command_parser(name, module)
    args = parser.parse_intermixed_args(rest)   # files and key=value may sit either side of flags
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print(f"specaware {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise                   # the reader left: handled quietly in main()
    except Exception as err:  # noqa: BLE001 - the last net: one line, the traceback on request
        if debug:
            raise
        print(f"specaware {name}: error: {one_line(err)} (run again with --debug for the "
              f"traceback)", file=sys.stderr)
        return 1


def one_line(err: BaseException) -> str:
    """`Type: message` on one line; a disk that fills up is said in those words, with where."""
    text = " ".join(str(err).split()) or repr(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = err.filename or "the output folder"
        return f"no space left on device while writing {where}"
    if type(err).__name__ == "RasterioIOError" and "No such file" not in text:
        text += (" (not a readable raster: empty, truncated or not a format GDAL reads; check "
                 "the file, re-download or convert it)")
    return f"{type(err).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = _run(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        # `specaware sensors | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again, and exit as Unix tools do on SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13

