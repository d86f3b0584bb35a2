"""The public surface is what we mean it to be."""

import sluice


def test_every_exported_name_resolves():
    for name in sluice.__all__:
        assert getattr(sluice, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        sluice.nope  # noqa: B018
    except AttributeError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
