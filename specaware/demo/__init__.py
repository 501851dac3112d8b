"""The end-to-end demo: synth -> shard -> pretrain -> export -> three fine-tuning tasks.

The command is `specaware demo` (specaware/cli/demo.py); `pipeline.run(plan, out, fresh)` runs
it from Python.
"""
