"""Evaluations and benchmarks of the semantic cache and the router (`pointsman eval|bench ...`).

Import the run_* functions from their modules (cache_eval, router_eval, bench_cache): each pulls
in rich and the datasets, which the router itself never needs.
"""
