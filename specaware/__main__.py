"""`python -m specaware ...` is the `specaware` command, for environments where the console
script is not on PATH (a venv that is not activated, a cluster job's bare python)."""
import sys

from specaware.cli import main

if __name__ == "__main__":
    sys.exit(main())
