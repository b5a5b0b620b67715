"""Start-up hook: Python imports `sitecustomize` at start-up from PYTHONPATH.

e2ecov puts this directory first on an instrumented service's PYTHONPATH, so every Python
process of the service (worker subprocesses too: they inherit the environment) starts the
control agent before its own code runs. The service's command line stays as in production.
Any `sitecustomize` this one shadows is run afterwards. Nothing here may break the service.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _start_agent() -> None:
    if not os.environ.get("E2ECOV_SERVICE"):
        return
    try:
        from e2ecov import agent
    except ImportError:
        home = os.environ.get("E2ECOV_HOME")
        if not home:
            raise
        sys.path.append(home)  # appended: never shadow the service's own packages
        from e2ecov import agent
    agent.activate()


def _run_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and spec.origin != __file__:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


try:
    _start_agent()
except Exception as exc:
    sys.stderr.write(f"e2ecov: coverage agent not started in pid {os.getpid()}: {exc!r}\n")
_run_shadowed_sitecustomize()
