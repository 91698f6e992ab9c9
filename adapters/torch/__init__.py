"""PyTorch as an implementation under test: ``torch.nn.functional`` for the kernels, the usual
torch formulations of the positional components, the ``nn`` modules for the layers.

torch itself is imported when an adapter is instantiated, never when this package is imported.
"""

from transpec.adapters.torch.adapter import TorchAdapter as TorchAdapter

__all__ = ["TorchAdapter"]
