"""Peers of bench/compare.py: the workload, its floor, engine adapters, gRPC load helpers.

Imported as the package `peers` (with bench/ on sys.path), never with bench/peers itself on
sys.path: its policy folder `pdp/` would shadow the real `pdp` package.
"""
