"""The launcher's own start-up hook: it says it ran, in the service's log."""

import os
import sys

print(f"launcher hook ran in pid {os.getpid()}", file=sys.stderr, flush=True)
