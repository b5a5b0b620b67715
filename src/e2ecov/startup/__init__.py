"""Start-up hook directory: e2ecov puts this directory on a service's PYTHONPATH."""
