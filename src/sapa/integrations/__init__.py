"""Adapters that put sapa's upsamplers into other libraries' models.

Each submodule imports its library when it is itself imported, so ``import sapa`` and
``import sapa.integrations`` need only torch:

- ``sapa.integrations.torchvision``: ``replace_fpn_upsampling`` swaps the nearest-neighbour
  top-down step of torchvision's ``FeaturePyramidNetwork`` (and of every detector built on it)
  for any upsampler of ``sapa.build_upsampler``.
- ``sapa.integrations.transformers``: ``segformer_with_upsampler`` puts a sapa upsampler
  (six guided x2 stages) into the decode head of a Hugging Face
  ``SegformerForSemanticSegmentation``.
"""
