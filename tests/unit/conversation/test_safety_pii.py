"""Personal data: detection with validation (Luhn, IBAN mod-97), masking with an allow list."""

import pytest

from common.conversation.safety import PiiKind, customer_values, find_pii, mask_pii, redact_for_audit
from common.conversation.safety.pii import iban_valid, luhn_valid


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind.value, f.value) for f in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("mail jane.doe@example.co.uk today", "email", "jane.doe@example.co.uk"),
        ("call +1 (415) 555-0132", "phone", "+1 (415) 555-0132"),
        ("my number is 020 7946 0958", "phone", "020 7946 0958"),
        ("Mon portable : 06 12 34 56 78", "phone", "06 12 34 56 78"),
        ("WhatsApp +34 612 345 678", "phone", "+34 612 345 678"),
        ("paid with 4111 1111 1111 1111", "card", "4111 1111 1111 1111"),
        ("amex 3782 822463 10005", "card", "3782 822463 10005"),
        ("IBAN DE89 3704 0044 0532 0130 00 thanks", "iban", "DE89 3704 0044 0532 0130 00"),
        ("IBAN GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
        ("ship to 221B Baker Street, London", "address", "221B Baker Street"),
        ("Calle Mayor 12, 3º B, Madrid", "address", "Calle Mayor 12, 3º B"),
        ("12 rue de la Paix, Paris", "address", "12 rue de la Paix"),
        ("Hauptstraße 5, Berlin", "address", "Hauptstraße 5"),
    ],
)
def test_each_kind_is_found_with_its_span(text: str, kind: str, value: str) -> None:
    [finding] = find_pii(text)
    assert (finding.kind.value, finding.value) == (kind, value)
    assert text[finding.start : finding.end] == value


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn-invalid
        "order 4111111111111111 hasn't shipped",  # Luhn-valid, but an order number
        "ORD-4111111111111111",
        "tracking 9400 1000 0000 0000 0000 00",
        "Tracking number 1Z999AA10123456784",
        "IBAN DE89 3704 0044 0532 0130 01",  # checksum fails
        "It cost $1,299.00 on 12/05/2024",
        "Order placed on 2024-05-12 at 14:30",
        "My account number at your store is 100234567",
        "My order 0012345678 hasn't arrived",
        "We are 5 minutes from Main Street",
        "EAN 4006381333931",
    ],
)
def test_lookalikes_are_not_personal_data(text: str) -> None:
    assert find_pii(text) == []


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89 3704 0044 0532 0130 01")
    assert not iban_valid("DE89 3704 0044 0532 0130")  # wrong length for DE


def test_mask_replaces_values_by_kind_tokens() -> None:
    result = mask_pii(
        "Mail a@b.com, call +44 20 7946 0958, card 4111 1111 1111 1111, IBAN GB82WEST12345698765432"
    )
    assert result.text == "Mail [email], call [phone], card [card], IBAN [iban]"
    assert result.masked_kinds == ("email", "phone", "card", "iban")
    assert [f.kind for f in result.findings] == [PiiKind.EMAIL, PiiKind.PHONE, PiiKind.CARD, PiiKind.IBAN]
    assert result.decision().action == "mask" and "a@b.com" not in result.decision().reason


def test_allowed_values_are_compared_normalised() -> None:
    text = "We'll call you at +1 415 555 0132 and email JANE@Example.com; card 4111-1111-1111-1111."
    result = mask_pii(text, allowed=["(415) 555-0132", "jane@example.com", "4111111111111111"])
    assert result.text == text
    assert result.masked_kinds == ()
    assert result.decision().action == "pass"
    other = mask_pii(text, allowed=["(415) 555-0199"])
    assert other.text == "We'll call you at [phone] and email [email]; card [card]."


def test_trunk_zero_and_country_code_are_the_same_phone() -> None:
    result = mask_pii("I'll ring 020 7946 0958", allowed=["+44 20 7946 0958"])
    assert result.text == "I'll ring 020 7946 0958"


def test_customer_values_feed_the_allow_list() -> None:
    allowed = customer_values(["my email is lena@posteo.de", "and my phone +49 171 2345678"])
    assert allowed == ("lena@posteo.de", "+49 171 2345678")
    result = mask_pii("Confirmed for lena@posteo.de and tom@ex.io", allowed=allowed)
    assert result.text == "Confirmed for lena@posteo.de and [email]"
    assert result.masked_kinds == ("email",)


def test_redact_for_audit_masks_everything() -> None:
    assert redact_for_audit("user Sam <sam@ex.com> lives at 742 Evergreen Terrace") == (
        "user Sam <[email]> lives at [address]"
    )
