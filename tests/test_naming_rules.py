"""Project slugs and agent names: what is accepted, what is refused with which code, and the
hints a near-miss gets."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError
from broker.identity.names import (
    ADJECTIVES,
    NOUNS,
    generate_candidates,
    is_explicit_id,
    is_generated_shape,
    mistake_hint,
    requested_name,
    validate_name,
    validate_new_name,
)
from broker.identity.projects import check_project_key
from broker.identity.slugs import human_key_of
from broker.store.keys import slug_candidates, slugify


# -- slugs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "slug"),
    [
        ("/data/projects/Backend_X", "data-projects-backend-x"),
        ("/tmp/concurrent-test", "tmp-concurrent-test"),
        ("  Hello World  ", "hello-world"),
        ("/srv/My Repo (copy)/", "srv-my-repo-copy"),
        ("ÜBER/ñandú", "ber-and"),
        ("--already-slug--", "already-slug"),
        ("", "project"),
        ("///", "project"),
        ("/", "project"),
    ],
)
def test_slugify(value: str, slug: str) -> None:
    assert slugify(value) == slug


@pytest.mark.parametrize(
    ("key", "slug"),
    [
        ("/tmp/concurrent-test", "tmp-concurrent-test"),
        ("/tmp/concurrent-test/", "tmp-concurrent-test"),
        ("/a/b/../c", "a-c"),
        ("tmp-concurrent-test", "tmp-concurrent-test"),
        ("Backend", "backend"),
    ],
)
def test_plain_slug(key: str, slug: str) -> None:
    """The slug a key names when no other path took it first (the first candidate)."""
    checked = check_project_key(key)
    human_key = human_key_of(checked)
    assert (slugify(checked) if human_key is None else slug_candidates(human_key)[0]) == slug


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "INVALID_ARGUMENT"),
        ("a/b", "INVALID_ARGUMENT"),
        ("~/repo", "INVALID_ARGUMENT"),
        ("./x", "INVALID_ARGUMENT"),
        ("YOUR_PROJECT", "CONFIGURATION_ERROR"),
        ("/home/$PROJECT", "CONFIGURATION_ERROR"),
    ],
)
def test_project_slug_rejects(key: str, code: str) -> None:
    with pytest.raises(BrokerError) as caught:
        check_project_key(key)
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{code}: ")


# -- names ---------------------------------------------------------------------------------------
def test_word_lists_match_the_reference() -> None:
    assert len(ADJECTIVES) == len(set(ADJECTIVES)) == 62
    assert len(NOUNS) == len(set(NOUNS)) == 69


def test_generate_candidates() -> None:
    names = generate_candidates(200)
    assert len(names) == len(set(names)) == 200
    for name in names:
        assert is_generated_shape(name)
        adjective = next(a for a in ADJECTIVES if name.startswith(a) and name[len(a) :] in NOUNS)
        assert name == adjective + name[len(adjective) :]
        assert validate_new_name(name) == name


@pytest.mark.parametrize(
    "name", ["BlueLake", "bluelake", "BLUELAKE", "alpha-one", "cc-0", "worker_42", "build.bot", "a-" + "x" * 126]
)
def test_valid_new_names(name: str) -> None:
    assert validate_new_name(f"  {name} ") == name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "INVALID_ARGUMENT"),
        ("   ", "INVALID_ARGUMENT"),
        ("Alice", "INVALID_AGENT_NAME"),
        ("BlueLakes", "INVALID_AGENT_NAME"),
        ("-alpha", "UNIX_USERNAME_AS_AGENT"),
        ("BackendHarmonizer", "DESCRIPTIVE_NAME"),
        ("alice", "UNIX_USERNAME_AS_AGENT"),
        ("a-" + "x" * 127, "INVALID_AGENT_NAME"),
        ("claude-code", "PROGRAM_NAME_AS_AGENT"),
        ("Codex", "PROGRAM_NAME_AS_AGENT"),
        ("gpt-4o", "MODEL_NAME_AS_AGENT"),
        ("my-opus-helper", "MODEL_NAME_AS_AGENT"),
        ("bob@example.com", "EMAIL_AS_AGENT"),
        ("everyone", "BROADCAST_ATTEMPT"),
        ("YOUR_AGENT", "CONFIGURATION_ERROR"),
        ("<AGENT>", "CONFIGURATION_ERROR"),
    ],
)
def test_invalid_new_names(name: str, code: str) -> None:
    with pytest.raises(BrokerError) as caught:
        validate_new_name(name)
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{code}: ")


@pytest.mark.parametrize(
    ("name", "strict", "coerce"),
    [
        # an explicit id is taken as given, unless it is a program or model name
        ("alpha-one", "alpha-one", "alpha-one"),
        ("db-migrator", "db-migrator", "db-migrator"),
        ("claude-code", "PROGRAM_NAME_AS_AGENT", None),
        # otherwise the alphanumerics must make an adjective+noun name (with the casing given)
        ("Blue Lake", "BlueLake", "BlueLake"),
        ("blue-lake!", "bluelake", "bluelake"),
        ("Green_Castle", "Green_Castle", "Green_Castle"),
        ("Backend-Harmonizer!!", "DESCRIPTIVE_NAME", None),
        ("BackendHarmonizer", "DESCRIPTIVE_NAME", None),
        ("greenlake", "greenlake", "greenlake"),
        ("---", "INVALID_AGENT_NAME", None),
    ],
)
def test_requested_name_by_mode(name: str, strict: str, coerce: str | None) -> None:
    """What register_agent registers for a name (None: a generated one), per naming mode."""
    assert requested_name(name, "coerce") == coerce
    assert requested_name(name, "always_auto") is None
    if strict.isupper() and "_" in strict:
        with pytest.raises(BrokerError) as caught:
            requested_name(name, "strict")
        assert caught.value.code == strict
    else:
        assert requested_name(name, "strict") == strict


def test_placeholders_are_refused_in_every_mode() -> None:
    for mode in ("coerce", "strict", "always_auto"):
        with pytest.raises(BrokerError) as caught:
            requested_name("YOUR_AGENT_NAME", mode)
        assert caught.value.code == "CONFIGURATION_ERROR"


def test_lookup_names_are_checked_for_shape_only() -> None:
    # Any well-shaped name can be looked up (registered names such as 'greenlake' must work).
    for name in ("greenlake", "Alice", "claude-code", "x" * 128):
        assert validate_name(name) == name
    for name in ("x" * 129, "a b", "a/b", "über"):
        with pytest.raises(BrokerError):
            validate_name(name)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("claude-code", "PROGRAM_NAME_AS_AGENT"),
        ("Gemini", "PROGRAM_NAME_AS_AGENT"),
        ("sonnet-4", "MODEL_NAME_AS_AGENT"),
        ("x@y.org", "EMAIL_AS_AGENT"),
        ("@all", "BROADCAST_ATTEMPT"),
        ("*", "BROADCAST_ATTEMPT"),
        ("x@y", None),
        ("BlueLake", None),
        ("alpha-one", None),
    ],
)
def test_mistake_hints(name: str, code: str | None) -> None:
    hint = mistake_hint(name)
    assert (hint[0] if hint else None) == code


def test_explicit_ids_need_a_separator() -> None:
    assert all(is_explicit_id(n) for n in ("alpha-one", "cc-0", "worker_42", "a.b"))
    assert not any(is_explicit_id(n) for n in ("alpha", "BlueLake", "-x", "a b-c"))
