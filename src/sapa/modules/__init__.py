"""``nn.Module`` upsamplers, all called as ``up(x, guide)``, and the factory that builds them."""
from .factory import (build_upsampler, format_upsampler_spec, is_guided, list_upsamplers,
                      parse_upsampler_spec, register_upsampler, upsampler_options)
from .sapa import SAPA
from . import interpolation  # noqa: F401  (registers nearest, bilinear)
from . import learned  # noqa: F401  (registers deconv, pixelshuffle)
from . import carafe  # noqa: F401  (registers carafe)
from . import dysample  # noqa: F401  (registers dysample)
from . import indexnet  # noqa: F401  (registers indexnet-hin, indexnet-m2o)
from . import a2u  # noqa: F401  (registers a2u)
from . import fade  # noqa: F401  (registers fade)
from . import sapa_d  # noqa: F401  (registers sapa-d)

__all__ = ["SAPA", "build_upsampler", "list_upsamplers", "is_guided", "register_upsampler",
           "upsampler_options", "parse_upsampler_spec", "format_upsampler_spec"]
