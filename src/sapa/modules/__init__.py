"""``nn.Module`` upsamplers, all called as ``up(x, guide)``, and the factory that builds them."""
from .factory import build_upsampler, is_guided, list_upsamplers, register_upsampler
from .sapa import SAPA

__all__ = ["SAPA", "build_upsampler", "list_upsamplers", "is_guided", "register_upsampler"]
