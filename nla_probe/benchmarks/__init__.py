"""Benchmarks registered with :mod:`nla_probe.bench_registry`; one module per subsystem."""
