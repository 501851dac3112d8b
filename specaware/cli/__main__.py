"""`python -m specaware.cli ...` = `specaware ...`."""
import sys

from specaware.cli import main

sys.exit(main())
