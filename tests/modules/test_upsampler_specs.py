"""Upsampler specs: ``name:key=value,...`` in ``build_upsampler``, ``parse_upsampler_spec``,
``format_upsampler_spec`` and ``upsampler_options``."""
from __future__ import annotations

import pytest
import torch

import sapa
from sapa.modules import (
    SAPA,
    format_upsampler_spec,
    is_guided,
    parse_upsampler_spec,
    upsampler_options,
)
from sapa.modules.carafe import CARAFE


def test_parse_values_by_type():
    name, opts = parse_upsampler_spec(
        "sapa-b:normalizer=relu,kernel_size=7,embed_dim=64,bias=false,value_proj=true,"
        "out_channels=None")
    assert name == "sapa-b"
    assert opts == {"normalizer": "relu", "kernel_size": 7, "embed_dim": 64, "bias": False,
                    "value_proj": True, "out_channels": None}
    assert [type(opts[k]) for k in ("kernel_size", "bias", "normalizer")] == [int, bool, str]
    # "none" is a string (SAPA's normaliser "none"); None is spelled None
    assert parse_upsampler_spec("sapa-b:normalizer=none")[1] == {"normalizer": "none"}
    assert parse_upsampler_spec("sapa-b") == ("sapa-b", {})
    for text, value in (("-3", -3), ("+2", 2), ("0.5", 0.5), (".5", 0.5), ("1e-3", 1e-3),
                        ("2.", 2.0), ("True", True), ("False", False), ("inf", "inf")):
        got = parse_upsampler_spec(f"sapa-b:border={text}")[1]["border"]
        assert got == value and type(got) is type(value), text


@pytest.mark.parametrize("spec, match", [
    ("sapa-b:", "no options after it"),
    ("sapa-b:kernel_size", "expected key=value"),
    ("sapa-b:kernel_size=", "expected key=value"),
    ("sapa-b:=3", "expected key=value"),
    ("sapa-b:kernel size=3", "expected key=value"),
    ("sapa-b:kernel_size=3,", "expected key=value"),
    ("sapa-b:kernel_size=3=4", "expected key=value"),
    ("sapa-b:norm=a:b", "expected key=value"),
    ("sapa-b:kernel_size=3,kernel_size=5", "sets 'kernel_size' twice"),
    ("bicubic:kernel_size=3", "unknown upsampler 'bicubic'"),
    ("sapa-b:scale_factor=4", "scale_factor are arguments of build_upsampler"),
    ("sapa-b:in_channels=4", "in_channels are arguments of build_upsampler"),
    ("sapa-b:variant=G", r"sapa-b has no option 'variant'; its options: backend, bias, border"),
    ("bilinear:mode=bicubic", r"bilinear has no option 'mode'; its options: \(none\)"),
])
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_upsampler_spec(spec)
    with pytest.raises(ValueError, match=match):
        sapa.build_upsampler(spec, 8)


def test_unknown_option_lists_the_module_options():
    with pytest.raises(ValueError) as err:
        sapa.build_upsampler("carafe:kup=7", 8)
    for option in ("c_mid", "k_enc", "k_up", "groups", "encoder_dilation", "backend"):
        assert option in str(err.value)
    # keyword arguments are held to the same list
    with pytest.raises(ValueError, match=r"bilinear has no option 'kernel_size'"):
        sapa.build_upsampler("bilinear", 8, kernel_size=3)


def test_build_from_a_spec_equals_build_with_keywords():
    torch.manual_seed(0)
    a = sapa.build_upsampler("sapa-g:normalizer=relu,kernel_size=7,embed_dim=16", 8, 6)
    torch.manual_seed(0)
    b = sapa.build_upsampler("sapa-g", 8, 6, normalizer="relu", kernel_size=7, embed_dim=16)
    assert isinstance(a, SAPA) and (a.variant, a.normalizer, a.kernel_size, a.embed_dim) == (
        "G", "relu", 7, 16)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    c = sapa.build_upsampler("carafe:k_up=3,c_mid=16", 8, scale_factor=4)
    assert isinstance(c, CARAFE) and (c.k_up, c.c_mid, c.scale_factor) == (3, 16, 4)
    # options from the spec and keywords combine
    d = sapa.build_upsampler("sapa-b:kernel_size=3", 8, embed_dim=4)
    assert (d.kernel_size, d.embed_dim) == (3, 4)


def test_spec_and_keyword_must_not_both_set_an_option():
    with pytest.raises(ValueError, match=r"'kernel_size' set both in the spec and as keyword"):
        sapa.build_upsampler("sapa-b:kernel_size=3", 8, kernel_size=3)


def test_module_validation_still_applies():
    with pytest.raises(ValueError, match="normalizer must be one of"):
        sapa.build_upsampler("sapa-b:normalizer=tanh", 8)
    with pytest.raises(ValueError, match="backend must be None or one of"):
        sapa.build_upsampler("sapa-b:backend=gpu", 8)


def test_is_guided_takes_a_spec():
    assert is_guided("sapa-b:kernel_size=3") and not is_guided("carafe:k_up=3")


def test_format_is_canonical_and_round_trips():
    opts = {"normalizer": "relu", "kernel_size": 7, "embed_dim": 64, "bias": False,
            "out_channels": None, "backend": "lean"}
    spec = format_upsampler_spec("sapa-b", opts)
    assert spec == ("sapa-b:backend=lean,bias=false,embed_dim=64,kernel_size=7,normalizer=relu,"
                    "out_channels=None")
    assert parse_upsampler_spec(spec) == ("sapa-b", opts)
    assert format_upsampler_spec("sapa-b:normalizer=relu,kernel_size=7") == (
        "sapa-b:kernel_size=7,normalizer=relu")
    assert format_upsampler_spec("sapa-b:kernel_size=7", {"normalizer": "relu"}) == (
        "sapa-b:kernel_size=7,normalizer=relu")
    assert format_upsampler_spec("bilinear") == format_upsampler_spec("bilinear", {}) == "bilinear"
    for value in (0.1, 1e-5, -2.5, 3.0):
        spec = format_upsampler_spec("sapa-b", {"embed_dim": value})
        assert parse_upsampler_spec(spec)[1]["embed_dim"] == value


@pytest.mark.parametrize("options, match", [
    ({"normalizer": "true"}, "cannot be written"),  # would read back as a bool
    ({"normalizer": "7"}, "cannot be written"),
    ({"normalizer": "None"}, "cannot be written"),
    ({"normalizer": "a,b"}, "cannot be written"),
    ({"normalizer": ""}, "cannot be written"),
    ({"embed_dim": float("nan")}, "cannot be written"),
    ({"embed_dim": (1, 2)}, "cannot be written"),
    ({"variant": "G"}, "sapa-b has no option 'variant'"),
    ({"scale_factor": 2}, "arguments of build_upsampler"),
])
def test_format_refuses_what_cannot_round_trip(options, match):
    with pytest.raises(ValueError, match=match):
        format_upsampler_spec("sapa-b", options)


def test_format_refuses_an_option_set_twice():
    with pytest.raises(ValueError, match="set both in the spec"):
        format_upsampler_spec("sapa-b:kernel_size=3", {"kernel_size": 5})


def test_every_registered_upsampler_lists_its_options():
    for name in sapa.list_upsamplers():
        options = upsampler_options(name)
        assert options == sorted(set(options))
        assert not set(options) & {"in_channels", "guide_channels", "scale_factor", "self"}
    assert upsampler_options("bilinear") == []
    assert "variant" not in upsampler_options("sapa-g") and "block" not in upsampler_options(
        "indexnet-hin")
