"""Credentials at rest (``common.crypto``): Fernet round trip, rotation, and nothing secret in a repr,
an error or the token itself."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from common.config import SecretsSettings
from common.crypto import CredentialCipher, generate_key, parse_keys
from common.domain import ChannelRoute
from common.errors import CredentialsUnavailable, InvalidInput

SECRET = "EAAG-very-secret-access-token"


def test_round_trip_and_the_token_hides_the_plaintext() -> None:
    cipher = CredentialCipher(parse_keys(generate_key()))
    token = cipher.encrypt({"access_token": SecretStr(SECRET), "app_secret": "s2"})
    assert SECRET not in token and "access_token" not in token
    values = cipher.decrypt(token)
    assert (
        values["access_token"].get_secret_value() == SECRET
        and values["app_secret"].get_secret_value() == "s2"
    )
    assert SECRET not in repr(values) and SECRET not in str(values)


def test_rotation_old_key_decrypts_until_removed() -> None:
    old, new = generate_key(), generate_key()
    token = CredentialCipher(parse_keys(old)).encrypt({"bot_token": "1:abc"})
    both = CredentialCipher(parse_keys(f"{new}, {old}"))
    assert both.decrypt(token)["bot_token"].get_secret_value() == "1:abc"  # the old token still reads
    rotated = both.rotate(token)
    assert CredentialCipher(parse_keys(new)).decrypt(rotated)["bot_token"].get_secret_value() == "1:abc"
    with pytest.raises(CredentialsUnavailable) as lost:
        CredentialCipher(parse_keys(new)).decrypt(token)  # the old key removed: the old token is unreadable
    assert "1:abc" not in str(lost.value) and token not in str(lost.value)


def test_no_key_refuses_and_a_bad_key_is_not_echoed() -> None:
    with pytest.raises(CredentialsUnavailable):
        CredentialCipher.from_settings(SecretsSettings()).encrypt({"a": "b"})
    almost = generate_key()[:-2]
    with pytest.raises(InvalidInput) as bad:
        parse_keys(f"{generate_key()},{almost}")
    assert almost not in str(bad.value) and bad.value.details == {"position": 1}


def test_a_route_with_credentials_shows_none_of_them() -> None:
    route = ChannelRoute(
        brand_id=uuid.uuid4(), enabled=True, credentials={"access_token": SecretStr(SECRET)}, external_id="PN"
    )
    assert route.secret("access_token") == SECRET
    assert SECRET not in repr(route) and SECRET not in str(route)
