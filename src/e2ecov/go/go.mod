module e2ecov.invalid/agent

go 1.22
