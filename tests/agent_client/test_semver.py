"""Versions and ranges as vehicles report them: SemVer 2.0.0 order, lenient on shape."""

from __future__ import annotations

import pytest

from agent_client.semver import SemverError, parse_range, parse_version, try_parse_version


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("2.5.0-rc.1", "2.5.0"),
        ("2.5.0-alpha", "2.5.0-alpha.1"),
        ("2.5.0-alpha.1", "2.5.0-alpha.beta"),
        ("2.5.0-rc.2", "2.5.0-rc.10"),
        ("2.5.0-beta.11", "2.5.0-rc.1"),
        ("2.9.0", "2.10.0"),
        ("2.99.99", "3"),
        ("0.0.9", "0.1"),
    ],
)
def test_parse_version__pairs__ordered_as_semver(lower: str, higher: str) -> None:
    assert parse_version(lower) < parse_version(higher)


@pytest.mark.parametrize(
    ("text", "same_as"),
    [("2.5", "2.5.0"), ("2", "2.0.0"), ("v2.5.0", "2.5.0"), ("2.5.0+build.42", "2.5.0"), (" 2.5.0 ", "2.5.0")],
)
def test_parse_version__equivalent_spellings__equal(text: str, same_as: str) -> None:
    assert parse_version(text) == parse_version(same_as)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2.x", "'2.x' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        ("2.5.0.1", "'2.5.0.1' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        ("02.5.0", "'02.5.0' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        ("", "'' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        ("V2.5.0", "'V2.5.0' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        ("２.5.0", "'２.5.0' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),  # noqa: RUF001 - fullwidth on purpose
    ],
)
def test_parse_version__malformed__semver_error_quoting_it(text: str, message: str) -> None:
    with pytest.raises(SemverError) as caught:
        parse_version(text)
    assert str(caught.value) == message


def test_parse_version__not_a_string__semver_error_naming_type() -> None:
    with pytest.raises(SemverError) as caught:
        parse_version(2.5)  # type: ignore[arg-type]
    assert str(caught.value) == "a version must be a string, not float"


@pytest.mark.parametrize("value", [None, 2.5, ["2.5.0"], {"v": "2.5.0"}, "latest"])
def test_try_parse_version__not_a_version__none(value: object) -> None:
    assert try_parse_version(value) is None


@pytest.mark.parametrize(
    ("text", "version", "holds"),
    [
        (">= 2.5.0, < 3", "2.5.0", True),
        (">= 2.5.0, < 3", "3.0.0", False),
        ("< 3", "3.0.0-rc.1", True),
        ("> 2.5.0", "2.5.0+b1", False),
        ("<= 2.5", "2.5.0", True),
        ("== 2.5.0", "2.5.0+b1", True),
        ("!= 2.5.0", "2.5.0", False),
        ("!= 2.5.0", "2.5.0-rc.1", True),
        ("2.5.0", "2.5.0", True),
        (">=2.5,<3,!=2.7.1", "2.7.1", False),
        (">=2.5,<3,!=2.7.1", "2.7.2", True),
    ],
)
def test_parse_range__version__holds_as_expected(text: str, version: str, holds: bool) -> None:
    assert parse_range(text)(parse_version(version)) is holds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a version range must be a non-empty string like '>= 2.5.0, < 3'"),
        ("   ", "a version range must be a non-empty string like '>= 2.5.0, < 3'"),
        ("=> 2.5", "'=> 2.5' is not a comparator (use >= > <= < == != and a version)"),
        (">= 2.5, ~3", "'~3' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        (">= 2.5 < 3", "'>= 2.5 < 3' is not a comparator (use >= > <= < == != and a version)"),
    ],
)
def test_parse_range__malformed__semver_error_naming_the_part(text: str, message: str) -> None:
    with pytest.raises(SemverError) as caught:
        parse_range(text)
    assert str(caught.value) == message
