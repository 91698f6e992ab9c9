"""Gradients: the backward pass of every kernel judged like its forward pass.

``vjp`` (the vector-Jacobian products, written once over a math namespace), ``reference``
(float64, and 40 digits through the same code), ``tolerance`` (the derived bounds,
docs/gradients.md), ``strategies`` (the cotangent), ``calls`` (calling an implementation's
backward) and ``properties``.
"""
