"""`python -m specaware.training ...` = `specaware pretrain ...`.

The launchers run this module: torchrun and `deepspeed --module` start a module directly, and
the deepspeed launcher may put `--local_rank=N` before the other arguments, which the top-level
`specaware` dispatcher would take for a command name.
"""
import argparse
import sys

from specaware.training import cli

if __name__ == "__main__":
    from specaware.model.runtime import tune_cpu_malloc
    tune_cpu_malloc()   # the launchers bypass `specaware`'s dispatcher, which does it otherwise
    parser = argparse.ArgumentParser(prog="python -m specaware.training",
                                     description="pretrain the masked autoencoder with DeepSpeed")
    cli.add_arguments(parser)
    sys.exit(cli.main(parser.parse_intermixed_args()))
