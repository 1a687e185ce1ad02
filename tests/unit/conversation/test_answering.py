"""Follow-up queries, sentence selection and answerability (common/conversation/answering.py)."""

from common import text as words
from common.conversation import answering
from common.schemas import RetrievedChunk

SHIPPING = RetrievedChunk(
    chunk_id="ship",
    source="upload://shipping.md",
    heading_path="Shipping > How long it takes",
    score=0.6,
    text=(
        "Orders placed before 11:00 Pacific Time ship the same business day.\n"
        "Orders placed later ship the next business day.\n\n"
        "Delivery times after dispatch:\n"
        "- Contiguous United States: 3-5 business days.\n"
        "- Canada: 5-8 business days, duties included.\n"
    ),
)
PAYMENTS = RetrievedChunk(
    chunk_id="pay",
    source="upload://orders.md",
    heading_path="Orders > Payment",
    score=0.5,
    text=(
        "We accept Visa, Mastercard, American Express and PayPal. We do not accept cash on\n"
        "delivery, checks or cryptocurrency."
    ),
)
PLANS = [
    RetrievedChunk(
        chunk_id=f"row-{i}",
        source="plans.md",
        heading_path="Plans",
        score=0.5,
        text=text,
    )
    for i, text in enumerate(
        (
            "Plan: Core Annual | Monthly price: $47 | Minimum term: 12 months",
            "Plan: Core | Monthly price: $55 | Minimum term: None",
        )
    )
]


def _scored(question: str, chunks: list[RetrievedChunk], semantic: float = 0.5) -> list[answering.Scored]:
    found = answering.candidates(chunks)
    return answering.score(question, found, [semantic] * len(found), lexical_weight=0.5)


def test_wrapped_lines_are_joined_into_sentences_and_list_items_stay_apart():
    assert words.passage_sentences(PAYMENTS.text) == [
        "We accept Visa, Mastercard, American Express and PayPal.",
        "We do not accept cash on delivery, checks or cryptocurrency.",
    ]
    assert words.passage_sentences(SHIPPING.text)[-2:] == [
        "Contiguous United States: 3-5 business days.",
        "Canada: 5-8 business days, duties included.",
    ]


def test_the_sentence_that_answers_is_selected_not_the_head_of_the_passage():
    selection = answering.select(_scored("How long does delivery take to Canada?", [SHIPPING]))
    assert selection is not None
    assert "5-8 business days" in selection.text
    assert "11:00" not in selection.text  # the head of the passage does not answer this
    assert "upload://" not in selection.text and selection.chunk is SHIPPING


def test_a_lead_in_sentence_brings_the_sentence_after_it():
    chunk = SHIPPING.model_copy(update={"text": "Delivery times:\n\nCanada takes 5-8 business days."})
    selection = answering.select(_scored("delivery times", [chunk]))
    assert selection is not None and selection.text == "Delivery times: Canada takes 5-8 business days."


def test_a_table_row_whose_key_the_question_names_beats_a_longer_key():
    selection = answering.select(_scored("How much is the Core plan per month?", PLANS))
    assert selection is not None and "$55" in selection.text


def test_followups_are_searched_with_the_previous_message():
    assert answering.is_followup("and to Canada?")
    assert answering.is_followup("how much does it cost")
    assert answering.is_followup("What about tents?")
    assert not answering.is_followup("How long do I have to return an item?")
    earlier = ["How long does delivery take to the US?"]
    assert (
        answering.retrieval_query("and to Canada?", earlier)
        == "How long does delivery take to the US? and to Canada?"
    )
    assert answering.retrieval_query("Which payment methods do you accept?", earlier) == (
        "Which payment methods do you accept?"
    )
    assert answering.retrieval_query("and to Canada?", []) == "and to Canada?"


def test_followup_terms_count_and_the_new_term_decides_the_sentence():
    found = answering.candidates([SHIPPING])
    scored = answering.score(
        "and to Canada?", found, None, lexical_weight=0.5, earlier="How long does delivery take to the US?"
    )
    best = max(scored, key=lambda s: s.score)
    assert best.candidate.text.startswith("Canada")


def test_a_question_whose_key_term_no_passage_holds_is_declined_with_the_reason():
    verdict = answering.assess(
        "Do you sell kayaks?",
        _scored("Do you sell kayaks?", [SHIPPING, PAYMENTS], semantic=0.3),
        [SHIPPING, PAYMENTS],
        min_score=0.1,
        max_uncovered_share=0.0,
        sure_semantic=0.5,
    )
    assert not verdict.answerable
    assert verdict.uncovered == ("kayak",)
    assert "kayak" in verdict.reason and "semantic=0.300" in verdict.figures


def test_typos_do_not_make_a_covered_question_uncovered():
    question = "how much is shiping to Canda"
    verdict = answering.assess(
        question,
        _scored(question, [SHIPPING], semantic=0.55),
        [SHIPPING],
        min_score=0.4,
        max_uncovered_share=0.0,
        sure_semantic=0.5,
    )
    assert verdict.answerable, verdict.reason
    assert verdict.uncovered == ()


def test_a_name_no_passage_holds_declines_when_names_decide():
    question = "Do you have a store in Chicago?"
    scored = _scored(question, [SHIPPING], semantic=0.9)
    kwargs = {"min_score": 0.1, "max_uncovered_share": 1.0, "sure_semantic": 0.0}
    assert not answering.assess(question, scored, [SHIPPING], names_decline=True, **kwargs).answerable
    assert answering.assess(question, scored, [SHIPPING], names_decline=False, **kwargs).answerable


def test_no_sentence_means_declined():
    verdict = answering.assess("anything", [], [], min_score=0.0, max_uncovered_share=1.0, sure_semantic=0.0)
    assert not verdict.answerable


def test_markdown_markup_is_not_shown_to_customers():
    assert answering.clean("**Free** returns, see [the policy](https://x.example/p) and `code`") == (
        "Free returns, see the policy and code"
    )


def test_words_negation_scope_quantities_names_and_vocabulary():
    assert words.negated_words("We do not accept cash, checks or cryptocurrency. We accept Visa.") == {
        "accept",
        "cash",
        "check",
        "cryptocurrency",
    }
    assert words.negated_words("Returns are free, but not for sale items") == {"sale", "item"}
    assert words.negated_words("It isn't refundable, we replace it instead") == {"refundable"}
    assert words.quantities("within 30 days, $75 and €39 or 12 EUR") == {
        ("30", "day"),
        ("75", "usd"),
        ("39", "eur"),
        ("12", "eur"),
    }
    assert words.names("Our Seattle store is open. Denver too.") == {"seattle"}
    assert "cutoff" in words.vocabulary("The cut-off is 11:00.")
    assert words.stem("refundable") == words.stem("refunded") == "refund"
    assert words.covered("standrad", {"standard"}) and not words.covered("kayak", {"tent"})


def test_typos_are_corrected_to_the_brand_words_and_real_words_are_left_alone():
    known = words.known_words(["Standard shipping to Canada takes long.", "Our Seattle store, guest passes."])
    assert words.correct_spelling("how lnog does standrad shiping take", known) == (
        "how long does standard shipping take"
    )
    assert words.correct_spelling("a stor in seatle, Canda", known) == "a store in seattle, canada"
    assert words.correct_spelling("Do you sell kayaks?", known) == "Do you sell kayaks?"  # sell ≠ shell
    assert words.close_word("retired", {"required"}) is None  # a real word, not a typo of the other
    assert words.close_word("sell", {"shell"}) is None


def test_a_followup_about_another_thing_drops_the_earlier_names_but_keeps_a_referent():
    assert answering.retrieval_query("and at Seaport?", ["What are the opening hours at Back Bay?"]) == (
        "What are the opening hours at and at Seaport?"
    )
    assert answering.followup_context("Do you sell Trail tents?", "how much does it cost") == (
        "Do you sell Trail tents?"  # "it" is the tent
    )


def test_customer_service_synonyms_cover_a_term_the_passages_say_in_other_words():
    freeze = words.vocabulary("You can freeze your membership for 1 to 3 months.")
    assert words.covered("hold", freeze) and words.covered("pause", freeze)
    assert not words.covered("kayak", freeze)  # no synonym: a near miss stays uncovered
    seniors = "Members aged 65 and over get 10% off the monthly price."
    known = words.meaning_vocabulary(seniors)
    assert words.phrase_keys(seniors) >= {"~aged 65", "~% off"}
    assert words.covered("seniors", known) and words.covered("discount", known)
    assert not words.phrase_keys("a kayak offer")  # "off" inside "offer" is no "% off"
    # A phrase of the question is covered by a synonym of the whole phrase, and so are its words.
    lost = "Items found in our clubs are kept for 30 days."
    found = words.meaning_vocabulary(lost)
    question = words.phrase_keys("how long do you keep lost property")
    assert words.phrase_covered(question, found) == {"lost", "property"}


def test_a_search_query_gets_the_brands_words_for_its_synonyms():
    known = words.known_words(["We do not accept cryptocurrency or checks. Dogs are welcome."])
    assert words.expand_query("do you take bitcoin", known) == "do you take bitcoin cryptocurrency"
    assert words.expand_query("do you accept cryptocurrency", known) == "do you accept cryptocurrency"
    assert words.expand_query("do you sell kayaks", known) == "do you sell kayaks"


def test_the_kind_of_answer_asked_for_decides_between_sentences_of_one_passage():
    assert answering.asks_for("how long does standard shipping take") == {"duration"}
    assert answering.asks_for("What's the address of the Seaport club?") == {"address"}
    assert answering.asks_for("When are the monthly fees taken?") == {"when"}  # a date, not a price
    assert answering.asks_for("How many guest passes do I get?") == {"count"}
    assert answering.asks_for("Do you accept bitcoin?") == set()
    assert answering.gives("Standard shipping takes 3-5 business days.", {"duration"})
    assert answering.gives("88 Seaport Boulevard, Boston, MA 02210.", {"address"})
    assert not answering.gives("Our only swimming pool is at the Seaport club.", {"address"})
    club = RetrievedChunk(
        chunk_id="club",
        source="clubs.html",
        heading_path="Our Clubs > Seaport",
        score=0.5,
        text="Our only swimming pool is at the Seaport club. 88 Seaport Boulevard, Boston, MA 02210.",
    )
    selection = answering.select(_scored("What's the address of the Seaport club?", [club]))
    assert selection is not None and selection.text.startswith("88 Seaport Boulevard")
    # "what time" is answered by a time, which does not say "time": the question is not uncovered.
    checkin = club.model_copy(update={"text": "Check-in is from 3:00 pm."})
    verdict = answering.assess(
        "what time is check-in",
        _scored("what time is check-in", [checkin]),
        [checkin],
        min_score=0.0,
        max_uncovered_share=0.0,
        sure_semantic=1.0,
    )
    assert verdict.answerable and verdict.uncovered == ()


def test_a_which_question_over_a_table_lists_every_matching_row_and_cites_each():
    rows = [
        RetrievedChunk(chunk_id=f"plan-{i}", source="plans.md", heading_path="Plans", score=0.5, text=text)
        for i, text in enumerate(
            (
                "Plan: All Clubs | Monthly price: $72 | Club access: All 4 clubs",
                "Plan: Premium | Monthly price: $109 | Club access: All 4 clubs",
                "Plan: Core | Monthly price: $55 | Club access: Home club",
            )
        )
    ]
    question = "Which plans give access to all clubs?"
    selection = answering.select(_scored(question, rows), question)
    assert selection is not None
    assert selection.text == "Plan: All Clubs, Premium (Club access: All 4 clubs)."
    assert {c.chunk_id for c in selection.chunks} == {"plan-0", "plan-1"}  # the Core row does not match
    # Not a "which" question: the best row alone.
    single = answering.select(_scored("How much is the Premium plan?", rows), "How much is the Premium plan?")
    assert single is not None and single.also == () and "$109" in single.text
