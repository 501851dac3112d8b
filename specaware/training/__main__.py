"""`python -m specaware.training ...` = `specaware pretrain ...`.

The launchers run this module: torchrun and `deepspeed --module` start a module directly, and
the deepspeed launcher may put `--local_rank=N` before the other arguments, which the top-level
`specaware` dispatcher would take for a command name.
"""
import argparse
import os
import sys

from specaware.cli import pretrain as cli

if __name__ == "__main__":
    from specaware.runtime import tune_cpu_malloc
    tune_cpu_malloc()   # the launchers bypass `specaware`'s dispatcher, which does it otherwise
    parser = argparse.ArgumentParser(prog="python -m specaware.training",
                                     description="pretrain the masked autoencoder with DeepSpeed")
    cli.add_arguments(parser)
    debug = "--debug" in sys.argv or os.environ.get("SPECAWARE_DEBUG") == "1"
    args = parser.parse_intermixed_args([a for a in sys.argv[1:] if a != "--debug"])
    try:
        sys.exit(cli.main(args))
    except Exception as err:  # noqa: BLE001 - as `specaware`: one line per rank, or --debug
        if debug:
            raise
        from specaware.cli import one_line
        print(f"specaware pretrain: error: {one_line(err)} (run again with --debug for the "
              "traceback)", file=sys.stderr)
        sys.exit(1)
