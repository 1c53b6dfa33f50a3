"""Benchmarks: `edgemeta bench peers` (peers.py) and scripts run as ``python -m edgemeta.benchmarks.<name>``."""
