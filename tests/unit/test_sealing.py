"""Channel secrets sealed at rest: the key ring, its format, and what it refuses."""

from __future__ import annotations

import base64

import pytest

from tollway.runtime.sealing import KeyRing, SecretKeyError, key_id_of, new_key_entry


def _ring(*ids: str) -> KeyRing:
    return KeyRing.parse(",".join(new_key_entry(i) for i in ids))


def test_a_sealed_secret_names_its_key_hides_the_text_and_opens_to_it() -> None:
    ring = _ring("k1")

    sealed = ring.seal("sk-live-1234567890", "channel:a")

    assert sealed.startswith("tw1:k1:")
    assert "sk-live" not in sealed
    assert key_id_of(sealed) == "k1"
    assert ring.open(sealed, "channel:a") == "sk-live-1234567890"


def test_each_seal_uses_a_fresh_nonce() -> None:
    ring = _ring("k1")

    assert ring.seal("same", "channel:a") != ring.seal("same", "channel:a")


def test_a_secret_moved_onto_another_channel_does_not_open() -> None:
    ring = _ring("k1")
    sealed = ring.seal("sk-a", "channel:a")

    with pytest.raises(SecretKeyError, match="does not open"):
        ring.open(sealed, "channel:b")


def test_the_first_key_seals_and_every_listed_key_opens() -> None:
    old = _ring("old")
    sealed_old = old.seal("sk-1", "channel:a")
    both = KeyRing.parse(f"{new_key_entry('new')},{old.keys[0][0]}:"
                         f"{base64.b64encode(old.keys[0][1]).decode()}")  # fmt: skip

    assert both.current_id == "new"
    assert both.open(sealed_old, "channel:a") == "sk-1"
    assert both.needs_reseal(sealed_old)
    assert not both.needs_reseal(both.seal("sk-1", "channel:a"))
    assert both.needs_reseal("sk-in-clear")


def test_a_secret_sealed_under_a_dropped_key_is_refused_with_its_key_id() -> None:
    sealed = _ring("gone").seal("sk-1", "channel:a")

    with pytest.raises(SecretKeyError, match="'gone'"):
        _ring("k2").open(sealed, "channel:a")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "lists no key"),
        ("nocolon", "key_id:base64"),
        ("k1:!!!", "not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "16, 24 or 32 bytes"),
        (f"{new_key_entry('k1')},{new_key_entry('k1')}", "listed twice"),
        (f"bad id:{base64.b64encode(bytes(32)).decode()}", "bad id"),
    ],
)
def test_a_malformed_key_list_is_refused_saying_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(SecretKeyError, match=complaint):
        KeyRing.parse(text)


def test_no_key_configured_is_none_not_an_error() -> None:
    assert KeyRing.optional("  ") is None
    assert KeyRing.from_env({}) is None
    assert KeyRing.from_env({"TOLLWAY_SECRET_KEYS": new_key_entry("k")}) is not None
