"""transpec.oracle: references, tolerances, properties, strategies, runner, CLI, pytest plugin.

Importing this package imports neither SymPy nor torch.
"""
