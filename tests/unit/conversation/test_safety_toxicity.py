"""Abuse word lists: whole-token matching, obfuscation, allow list, categories."""

import pytest

from common.conversation.safety import TOXICITY_RULE, check_toxicity


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("this is fucking ridiculous", "fuck"),
        ("f*ck this", "fuck"),
        ("f**k this", "fuck"),
        ("sh1t service", "shit"),
        ("$hit service", "shit"),
        ("fuuuuuck", "fuck"),
        ("f u c k your policy", "fuck"),
        ("a$$hole", "asshole"),
        ("vete a la mierda", "mierda"),
        ("Scheiße, zu spät", "scheiße"),
    ],
)
def test_obfuscated_profanity_is_found(text: str, term: str) -> None:
    verdict = check_toxicity(text)
    assert verdict.is_toxic
    assert term in verdict.terms


@pytest.mark.parametrize(
    "text",
    [
        "I live in Scunthorpe",
        "the cockpit of my harness",
        "can you assess the damage?",
        "what class of waterproofing?",
        "shiitake in the freeze-dried meal",
        "I bought it at Dick's Sporting Goods",
        "an idiot-proof stove",
        "Mon colis est en retard",
        "How do I kill bugs in my tent?",
        "the passion fruit gels",
    ],
)
def test_ordinary_words_that_contain_terms_pass(text: str) -> None:
    verdict = check_toxicity(text)
    assert not verdict.is_toxic, verdict.terms
    assert verdict.score == 0.0


def test_mild_words_alone_are_not_toxic_but_are_reported() -> None:
    verdict = check_toxicity("damn, the zipper sucks")
    assert not verdict.is_toxic
    assert set(verdict.terms) == {"damn", "sucks"}
    assert verdict.categories == ("mild",)


def test_threats_are_categorised_and_score_high() -> None:
    verdict = check_toxicity("I will kill you if it doesn't arrive")
    assert verdict.is_toxic and verdict.score > 0.9
    assert "threat" in verdict.categories
    assert check_toxicity("Te voy a matar").categories == ("threat",)


def test_insults_addressed_to_the_assistant() -> None:
    verdict = check_toxicity("you are useless")
    assert verdict.is_toxic and verdict.categories == ("insult",)
    assert not check_toxicity("is this a stupid question?").is_toxic


def test_decision() -> None:
    decision = check_toxicity("you idiot").decision(action="escalate")
    assert (decision.rule, decision.action) == (TOXICITY_RULE, "escalate")
    assert check_toxicity("thanks!").decision().action == "pass"
