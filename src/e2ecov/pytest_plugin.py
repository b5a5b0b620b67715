"""pytest plugin shipped with e2ecov: per-test coverage contexts in the services under test.

Inert unless the test command runs under `e2ecov run` (which sets E2ECOV_RUN_ID).
"""
