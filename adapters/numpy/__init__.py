"""NumPy as an implementation under test: a plain NumPy implementation of every component."""

from transpec.adapters.numpy.adapter import NumpyAdapter as NumpyAdapter

__all__ = ["NumpyAdapter"]
