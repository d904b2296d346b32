"""Generators of demo and benchmark data: the demo city (city, city_places) and the benchmark
metro (metro, metro_places).

Used only by the management commands (generate_demo_city, generate_metro, demo_setup), the
pipeline demo (pipeline/), the benchmarks (bench/) and the tests; no product module may import
them. Nothing is re-exported here: callers import the submodules.
"""
