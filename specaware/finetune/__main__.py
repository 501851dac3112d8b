"""`python -m specaware.finetune ...` = `specaware finetune ...`; what torchrun starts:

    torchrun --nproc_per_node 4 -m specaware.finetune configs/finetune/segmentation.yaml ...
"""
import argparse
import sys

from specaware.cli import finetune as cli

if __name__ == "__main__":
    from specaware.runtime import tune_cpu_malloc
    tune_cpu_malloc()   # torchrun bypasses `specaware`'s dispatcher, which does it otherwise
    parser = argparse.ArgumentParser(prog="python -m specaware.finetune",
                                     description="fine-tune a downstream head on an encoder")
    cli.add_arguments(parser)
    sys.exit(cli.main(parser.parse_intermixed_args()))
