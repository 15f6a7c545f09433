"""One registry and one factory for every upsampler (as timm does for models).

Every registered builder has the signature
``builder(in_channels, guide_channels=None, scale_factor=2, **kwargs) -> nn.Module`` and the
module it returns is called as ``up(x, guide=None)`` -> ``B x C x H' x W'``.

An upsampler is named by a *spec*: a registered name, optionally followed by its options,
``name:key=value,key=value`` (e.g. ``sapa-b:normalizer=relu,kernel_size=7``). Values are read
as ``true``/``false`` (bool), ``None``, an int, a float (``0.5``, ``1e-3``) or else a string
(so ``normalizer=none`` is the string ``"none"``). ``parse_upsampler_spec`` and
``format_upsampler_spec`` convert between specs and ``(name, options)``.
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ._inputs import positive_int

# arguments of every builder, set by build_upsampler's own parameters, never as options
RESERVED = ("in_channels", "guide_channels", "scale_factor")

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# names whose modules need the guide (the encoder feature) in forward
_GUIDED: set[str] = set()
# name -> the keyword options its builder accepts (None: not known, left to the builder)
_OPTIONS: dict[str, tuple[str, ...] | None] = {}

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_KEY = re.compile(r"[A-Za-z_]\w*")


def _keyword_parameters(fn: Callable, exclude: tuple[str, ...]) -> tuple[str, ...] | None:
    """Names ``fn`` accepts by keyword, less ``exclude`` (``None`` if it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.kind in kinds and p.name not in exclude)


def register_upsampler(name: str, *, guided: bool, module: type | None = None,
                       fixed: tuple[str, ...] = ()):
    """Decorator: register ``builder`` under ``name``.

    Its options (what a spec or ``build_upsampler``'s ``**kwargs`` may set) are the keyword
    parameters of the builder or, for a builder that forwards ``**kwargs``, of ``module``'s
    ``__init__``, less ``in_channels``, ``guide_channels``, ``scale_factor`` and the ``fixed``
    ones the builder sets itself (e.g. SAPA-B's ``variant``).
    """
    if not isinstance(name, str) or not name or any(ch in name for ch in ":,= "):
        raise ValueError(f"an upsampler name is a non-empty string without ':', ',', '=' or "
                         f"spaces, got {name!r}")

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"upsampler {name!r} is already registered")
        options = _keyword_parameters(builder, RESERVED + tuple(fixed))
        if options is None and module is not None:
            options = _keyword_parameters(module.__init__, ("self",) + RESERVED + tuple(fixed))
        _REGISTRY[name] = builder
        _OPTIONS[name] = options
        if guided:
            _GUIDED.add(name)
        return builder

    return deco


def list_upsamplers() -> list[str]:
    """Every name ``build_upsampler`` accepts, sorted."""
    return sorted(_REGISTRY)


def is_guided(name: str) -> bool:
    """Whether the upsampler ``name`` (a name or a spec) needs the guide feature."""
    name = _split_name(name)
    _check_name(name)
    return name in _GUIDED


def upsampler_options(name: str) -> list[str]:
    """The options the upsampler ``name`` accepts (in a spec or as keywords), sorted."""
    _check_name(name)
    options = _OPTIONS[name]
    if options is None:
        raise ValueError(f"upsampler {name!r} was registered without a list of its options")
    return sorted(options)


def _check_name(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown upsampler {name!r}; known: {', '.join(list_upsamplers())}")


def _split_name(spec):
    return spec.partition(":")[0] if isinstance(spec, str) else spec


def _parse_value(text: str) -> Any:
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    if text == "None":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def parse_upsampler_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,..."`` -> ``(name, options)``.

    The name must be registered; each key a Python identifier, given once, not one of
    ``in_channels``, ``guide_channels``, ``scale_factor`` (arguments of ``build_upsampler``)
    and an option of that upsampler. Values: ``true``/``false`` -> bool, ``None`` -> None, an
    int, a float, or else the string itself.
    """
    if not isinstance(spec, str):
        _check_name(spec)
    name, colon, body = spec.partition(":")
    _check_name(name)
    options: dict[str, Any] = {}
    if colon:
        if not body:
            raise ValueError(f"upsampler spec {spec!r} has ':' but no options after it")
        for item in body.split(","):
            key, eq, text = item.partition("=")
            if not eq or not _KEY.fullmatch(key) or not text or "=" in text or ":" in text:
                raise ValueError(f"upsampler spec {spec!r}: expected key=value, got {item!r}")
            if key in options:
                raise ValueError(f"upsampler spec {spec!r} sets {key!r} twice")
            options[key] = _parse_value(text)
    _check_options(name, options, source=f"upsampler spec {spec!r}")
    return name, options


def _check_options(name: str, options: dict[str, Any], source: str) -> None:
    reserved = sorted(set(options) & set(RESERVED))
    if reserved:
        raise ValueError(f"{source}: {', '.join(reserved)} are arguments of build_upsampler, "
                         "not options")
    accepted = _OPTIONS[name]
    if accepted is None:
        return
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{source}: {name} has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(sorted(accepted)) or '(none)'}")


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "None"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if (isinstance(value, str) and value and isinstance(_parse_value(value), str)
            and not any(ch in value for ch in ":,= ")):
        return value
    raise ValueError(f"option {key}={value!r} cannot be written in an upsampler spec (values are "
                     "bools, None, ints, finite floats, or strings that read as none of these "
                     "and hold no ':', ',', '=' or spaces)")


def format_upsampler_spec(spec: str, options: dict[str, Any] | None = None) -> str:
    """The canonical spec of ``spec`` (a name or a spec) with ``options`` added: the name, then
    every option in sorted key order. ``parse_upsampler_spec`` reads it back to the same
    ``(name, options)``; an option set both in ``spec`` and in ``options`` is an error."""
    name, merged = parse_upsampler_spec(spec)
    for key, value in (options or {}).items():
        if key in merged:
            raise ValueError(f"option {key!r} is set both in the spec {spec!r} and in options")
        merged[key] = value
    _check_options(name, merged, source=f"upsampler {name!r}")
    if not merged:
        return name
    return name + ":" + ",".join(f"{k}={_format_value(k, merged[k])}" for k in sorted(merged))


def build_upsampler(name: str, in_channels: int, guide_channels: int | None = None,
                    scale_factor: int = 2, **kwargs) -> nn.Module:
    """Build the upsampler named by ``name``, a registered name or a spec
    (``"sapa-b:normalizer=relu,kernel_size=7"``).

    Args:
        name: one of ``list_upsamplers()``, optionally with options (module docstring).
        in_channels: ``C`` of the decoder feature ``x``.
        guide_channels: ``Cg`` of the guide (default ``C``); ignored by guide-free upsamplers.
        scale_factor: ``H' / H``, a positive int, checked for every upsampler. Guide-free
            upsamplers upsample by it; the x2-only ones (``a2u``, ``indexnet-*``) refuse any
            other value; ``sapa-d`` uses it with ``high_offset=True``; the other guided ones
            (``sapa-i/b/p/g``, ``fade``) take their output size from the guide and do not use it.
        **kwargs: the upsampler's own options (``upsampler_options(name)``); one set both here
            and in the spec is an error.
    """
    name, options = parse_upsampler_spec(name)
    positive_int("scale_factor", scale_factor)
    both = sorted(set(options) & set(kwargs))
    if both:
        raise ValueError(f"{', '.join(map(repr, both))} set both in the spec and as keyword "
                         "arguments; give each option once")
    options.update(kwargs)
    _check_options(name, options, source=f"build_upsampler({name!r})")
    return _REGISTRY[name](in_channels, guide_channels, scale_factor, **options)
