from pipeline.fingerprint import fingerprint, normalise
from topics.schemas import ChatMessage, Query


def test_normalise_folds_case_space_and_unicode_forms() -> None:
    assert normalise("  Hello\tWORLD \n") == "hello world"
    assert normalise("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"  # NFKC


def test_same_question_same_fingerprint() -> None:
    a = Query(text="What is 2+2?", tenant="acme")
    b = Query(text="  what IS 2+2? ", tenant="acme", id="other", metadata={"x": 1})
    assert fingerprint(a) == fingerprint(b)


def test_tenant_and_generation_parameters_separate_fingerprints() -> None:
    base = Query(text="What is 2+2?", tenant="acme")
    others = [
        Query(text="What is 2+2?", tenant="globex"),
        Query(text="What is 2+2?", tenant="acme", max_tokens=17),
        Query(text="What is 2+2?", tenant="acme", temperature=0.7),
        Query(text="What is 2+3?", tenant="acme"),
    ]
    assert len({fingerprint(q) for q in [base, *others]}) == 5


def test_text_and_single_user_message_are_the_same_query() -> None:
    text = Query(text="hi there")
    chat = Query(messages=[ChatMessage("user", "hi there")])
    system = Query(messages=[ChatMessage("system", "hi there")])
    assert fingerprint(text) == fingerprint(chat) != fingerprint(system)


def test_separator_prevents_concatenation_collisions() -> None:
    a = Query(messages=[ChatMessage("user", "ab"), ChatMessage("user", "c")])
    b = Query(messages=[ChatMessage("user", "a"), ChatMessage("user", "bc")])
    assert fingerprint(a) != fingerprint(b)
