"""What tests and benchmarks share: processes, private servers, ports, waits, meters, the invariant oracle."""
