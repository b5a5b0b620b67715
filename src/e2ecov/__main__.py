"""`python -m e2ecov`: the `e2ecov` command, for an interpreter whose scripts are not on PATH."""

import sys

from e2ecov.cli import main

sys.exit(main())
