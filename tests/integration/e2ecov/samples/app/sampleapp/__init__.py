"""A tiny stdlib HTTP service that e2ecov's own tests start, drive and measure."""
