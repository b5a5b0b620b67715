"""e2ecov: end-to-end coverage for running services."""
