"""Evaluations and benchmarks of the semantic cache and the router: `pointsman eval|bench ...`."""
