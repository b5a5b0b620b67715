"""A launcher as `opentelemetry-instrument` is: it puts a start-up hook of its own
(`hook/sitecustomize.py`, which runs no other) first on PYTHONPATH and execs the command it
was given."""

import os
import sys

hook = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hook")
path = os.environ.get("PYTHONPATH")
os.environ["PYTHONPATH"] = os.pathsep.join([hook, path] if path else [hook])
os.execl(sys.argv[1], *sys.argv[1:])
