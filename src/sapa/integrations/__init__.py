"""Adapters that put sapa's upsamplers into models of other libraries (one file per library).

Each adapter is imported by its own module path (``sapa.integrations.transformers``, ...), so
that ``import sapa`` never imports those libraries.
"""
