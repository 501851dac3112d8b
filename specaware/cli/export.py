"""`specaware export CKPT_DIR OUT.safetensors`: consolidated fp32 weights + JSON config.

The format and the consolidation are specaware/export.py's; `--format` hub / onnx /
torch-export are specaware/inference_export.py's. This module parses and reports.
"""
from __future__ import annotations

import logging
import sys


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a step_* checkpoint folder, or a run folder "
                                           "(its newest complete checkpoint is used); with "
                                           "--format hub also an export, with onnx / "
                                           "torch-export an export, a hub folder or a "
                                           "fine-tuned BEST.safetensors")
    parser.add_argument("out", help="output .safetensors path (OUT.json is written beside it); "
                                    "a folder for --format hub; OUT.onnx / OUT.pt2 otherwise")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip loading the weights into a freshly built model")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="unpickle the DeepSpeed files without the allow-list check (only "
                             "for a checkpoint whose origin you trust: a pickle can run code)")
    from specaware.inference_export import add_format_arguments
    add_format_arguments(parser)    # --format hub|onnx|torch-export and the band set


def main(args) -> int:
    from specaware.export import export
    from specaware.inference_export import run_format

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        done = run_format(args)     # None: the default safetensors export below
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if done is not None:
        return done
    try:
        out, meta = export(args.checkpoint, args.out, verify=not args.no_verify,
                           trust_pickle=args.trust_pickle)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} and {meta}")
    return 0
