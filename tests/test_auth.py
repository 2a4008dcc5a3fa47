"""app/auth.py: the shape of a session token, its hash, and what a principal may do."""

from __future__ import annotations

from app.auth import Principal, hash_matches, mint_token, token_hash, token_id_of


def test_a_minted_token_names_its_id_and_matches_only_its_hash() -> None:
    token_id, token, digest = mint_token()
    assert token.startswith(token_id + ".") and token_id_of(token) == token_id
    assert digest == token_hash(token) and len(digest) == 64 and token not in digest
    assert hash_matches(token, digest)
    assert not hash_matches(token + "x", digest)
    assert mint_token()[1] != token


def test_strings_not_shaped_like_a_token() -> None:
    token_id, token, _ = mint_token()
    for value in ("", "key-a", token_id, token_id + ".", "tok_x.secret", "TOK" + token[3:]):
        assert token_id_of(value) is None, value


def test_what_a_principal_may_do() -> None:
    key = Principal("tenant-a", "key")
    nobody = Principal("default", None)
    read = Principal("tenant-a", "read", token_id="tok_1", session_id="ses_1")
    control = Principal("tenant-a", "control", token_id="tok_2", session_id="ses_1")
    assert key.can_control and nobody.can_control and control.can_control
    assert not read.can_control
    assert not key.is_token and read.is_token
    assert key.decided_by == "tenant-a" and control.decided_by == "token:tok_2"
