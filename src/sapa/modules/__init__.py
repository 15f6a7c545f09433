"""``nn.Module`` upsamplers, all called as ``up(x, guide)``."""
from .sapa import SAPA

__all__ = ["SAPA"]
