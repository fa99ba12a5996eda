"""Bundled load generator: workloads, arrivals, streaming client, SLO metrics, sweeps, plots."""
