"""JAX as an implementation under test: the JAX array base and the built-in ``jax`` adapter.

jax is imported when an adapter is instantiated, never when this package is imported.
"""
