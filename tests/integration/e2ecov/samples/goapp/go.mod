module example.com/goapp

go 1.22

require e2ecov.invalid/agent v0.0.0

// e2ecov's Go agent ships inside the e2ecov package
replace e2ecov.invalid/agent => ../../../../../src/e2ecov/go
