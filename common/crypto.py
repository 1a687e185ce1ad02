"""Credentials at rest: ``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256, authenticated) over
:class:`~cryptography.fernet.MultiFernet`, so keys rotate without downtime.

Why Fernet and not an envelope scheme of our own: it is a maintained, audited construction with key
rotation built in (``MultiFernet.rotate``), and every process that needs a credential (gateway,
dispatcher, CLI) already has the settings. A KMS-held key plugs in the same way: put the key it releases
into ``SECRETS__ENCRYPTION_KEYS`` from the secret manager.

What is encrypted is a JSON object of strings (a connection's access token, app secret, ...). Decrypted
values are handed out as :class:`pydantic.SecretStr`, so a ``repr``, a log line or an error shows
``'**********'``; :meth:`CredentialCipher.decrypt` errors never contain the token or the plaintext.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from common.config import SecretsSettings
from common.errors import CredentialsUnavailable, InvalidInput


def generate_key() -> str:
    """A new Fernet key (url-safe base64 of 32 random bytes), for ``SECRETS__ENCRYPTION_KEYS``."""
    return Fernet.generate_key().decode()


def parse_keys(value: str) -> list[Fernet]:
    """Comma-separated Fernet keys, newest first; :class:`InvalidInput` naming the position of a bad one."""
    keys: list[Fernet] = []
    for index, raw in enumerate(part.strip() for part in value.split(",")):
        if not raw:
            continue
        try:
            keys.append(Fernet(raw.encode()))
        except ValueError:
            # Never echo the value: a mistyped key is still most of a key.
            raise InvalidInput(
                "SECRETS__ENCRYPTION_KEYS holds a value that is not a Fernet key",
                details={"position": index},
            ) from None
    return keys


class CredentialCipher:
    """Encrypts a credentials mapping into a token and back; the first key encrypts, all decrypt."""

    def __init__(self, keys: list[Fernet]) -> None:
        self._fernet = MultiFernet(keys) if keys else None

    @classmethod
    def from_settings(cls, settings: SecretsSettings) -> CredentialCipher:
        """The cipher of ``SECRETS__ENCRYPTION_KEYS`` (one without keys refuses to encrypt or decrypt)."""
        raw = settings.encryption_keys.get_secret_value() if settings.encryption_keys else ""
        return cls(parse_keys(raw))

    @property
    def configured(self) -> bool:
        """Whether a key is configured."""
        return self._fernet is not None

    def encrypt(self, values: Mapping[str, SecretStr | str]) -> str:
        """The Fernet token of ``values`` (a JSON object of strings)."""
        plain = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in values.items()}
        return self._require().encrypt(json.dumps(plain, sort_keys=True).encode()).decode()

    def decrypt(self, token: str) -> dict[str, SecretStr]:
        """The mapping a token holds, each value a :class:`SecretStr`."""
        try:
            data = json.loads(self._require().decrypt(token.encode()))
        except InvalidToken:
            raise CredentialsUnavailable(
                "stored credentials were encrypted with a key that is not in SECRETS__ENCRYPTION_KEYS"
            ) from None
        return {str(k): SecretStr(str(v)) for k, v in data.items()}

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the first key (what ``admin rotate-keys`` does to every row)."""
        try:
            return self._require().rotate(token.encode()).decode()
        except InvalidToken:
            raise CredentialsUnavailable("stored credentials cannot be decrypted with any key") from None

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise CredentialsUnavailable("SECRETS__ENCRYPTION_KEYS is not set: credentials cannot be stored")
        return self._fernet
