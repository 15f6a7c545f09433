"""``nn.Module`` upsamplers, all called as ``up(x, guide)``, and the factory that builds them."""
from . import (
                      a2u,  # noqa: F401  (registers a2u)
                      carafe,  # noqa: F401  (registers carafe)
                      dysample,  # noqa: F401  (registers dysample)
                      fade,  # noqa: F401  (registers fade)
                      indexnet,  # noqa: F401  (registers indexnet-hin, indexnet-m2o)
                      interpolation,  # noqa: F401  (registers nearest, bilinear)
                      learned,  # noqa: F401  (registers deconv, pixelshuffle)
                      sapa_d,  # noqa: F401  (registers sapa-d)
)
from .factory import (
                      build_upsampler,
                      format_upsampler_spec,
                      is_guided,
                      list_upsamplers,
                      parse_upsampler_spec,
                      register_upsampler,
                      upsampler_options,
)
from .sapa import SAPA

__all__ = ["SAPA", "build_upsampler", "list_upsamplers", "is_guided", "register_upsampler",
           "upsampler_options", "parse_upsampler_spec", "format_upsampler_spec"]
