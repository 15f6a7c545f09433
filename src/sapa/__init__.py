"""sapa: Similarity-Aware Point Affiliation (NeurIPS 2022) feature upsampling for PyTorch."""
from .modules import SAPA, build_upsampler, list_upsamplers
from .ops import list_backends, local_assemble, local_similarity, sapa_attention

__version__ = "0.1.0"

__all__ = [
    "SAPA",
    "build_upsampler",
    "list_upsamplers",
    "sapa_attention",
    "local_similarity",
    "local_assemble",
    "list_backends",
    "__version__",
]
