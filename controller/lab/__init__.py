"""The lab: a whole simulated lane (broker, store, simulator and daemon as processes) for the
demo, the integration tests, the fault campaigns and the benchmarks."""
