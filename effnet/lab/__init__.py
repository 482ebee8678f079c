"""The compound-scaling lab: baselines as staged specs, scale, search, sweep, plots."""
