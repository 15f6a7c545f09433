"""``--upsamplers`` entries: space-separated specs (the old comma list still works), checked
before any work, and run folders whose names are safe whatever the spec holds."""
import pytest

import sapa.modules.factory as factory
from sapa.errors import UsageError
from sapa.experiments.specs import check_spec, run_name, split_upsamplers


def test_split_upsamplers():
    assert split_upsamplers(["bilinear", "sapa-b"]) == ["bilinear", "sapa-b"]
    assert split_upsamplers(["bilinear,sapa-b"]) == ["bilinear", "sapa-b"]  # the old syntax
    assert split_upsamplers(["bilinear, sapa-b", "carafe"]) == ["bilinear", "sapa-b", "carafe"]
    with pytest.raises(UsageError, match="bilinear twice"):
        split_upsamplers(["bilinear", "nearest,bilinear"])
    with pytest.raises(UsageError, match="no upsampler"):
        split_upsamplers([","])
    with pytest.raises(UsageError, match="unknown upsampler 'nope'; known: .*bilinear"):
        split_upsamplers(["nope"])


def test_a_spec_with_options_is_one_entry_and_goes_to_the_factorys_parser(monkeypatch):
    seen = []

    def parse(spec):
        seen.append(spec)
        name, _, opts = spec.partition(":")
        if "bad" in opts:
            raise ValueError("unknown option 'bad'")
        return name, dict(kv.split("=") for kv in opts.split(",")) if opts else {}

    monkeypatch.setattr(factory, "parse_upsampler_spec", parse, raising=False)
    specs = split_upsamplers(["sapa-b:normalizer=relu,kernel_size=7", "bilinear"])
    assert specs == ["sapa-b:normalizer=relu,kernel_size=7", "bilinear"]
    assert seen == specs
    with pytest.raises(UsageError, match="'sapa-b:bad=1': unknown option 'bad'"):
        check_spec("sapa-b:bad=1")


def test_without_a_spec_parser_only_names_are_accepted(monkeypatch):
    monkeypatch.delattr(factory, "parse_upsampler_spec", raising=False)
    check_spec("sapa-b")
    with pytest.raises(UsageError, match="names only"):
        check_spec("sapa-b:kernel_size=7")
    with pytest.raises(UsageError, match="unknown name 'nope'"):
        check_spec("nope:k=1")


def test_run_names_are_safe_and_distinct():
    assert run_name("sapa-b", 0) == "sapa-b-seed0"  # plain names as before
    a = run_name("sapa-b:normalizer=relu,kernel_size=7", 1)
    b = run_name("sapa-b_normalizer_relu_kernel_size_7", 1)
    c = run_name("sapa-b:normalizer=relu;kernel_size=7", 1)
    assert len({a, b, c}) == 3
    for name in (a, c, run_name("x/../..:" + "k=v," * 50, 2)):
        assert all(ch.isalnum() or ch in "._-" for ch in name), name
        assert len(name) <= 80 + 9 + 6 and name.endswith(("-seed1", "-seed2"))
    assert a.startswith("sapa-b_normalizer_relu_kernel_size_7-")
