"""Cache logic that needs no Redis: keys, header policy, guards, codec, breaker, in-process single-flight."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import CircuitBreaker
from gateway.cache import cache_mode_from_headers
from gateway.cache.codec import decode, encode, is_complete
from gateway.cache.keys import TenantKeys, canonical_request, digest, is_deterministic, semantic_scope
from gateway.cache.matching import alignment, contextual, guards, verifier
from gateway.cache.single_flight import SingleFlight
from gateway.types import BackendRequest, StreamEvent


def chat(*messages: tuple[str, str], **params: object) -> BackendRequest:
    return BackendRequest(kind="chat", model="m", messages=[{"role": r, "content": c} for r, c in messages],
                          params={"temperature": 0, **params})


def key(request: BackendRequest) -> str:
    return digest(canonical_request(request))


# keys ----------------------------------------------------------------------------------------------

def test_transport_fields_do_not_change_the_key_but_output_params_do() -> None:
    base = chat(("user", "hi"))
    streamed = chat(("user", "hi"), stream=True, stream_options={"include_usage": True}, user="x")
    assert key(base) == key(streamed)
    for param, value in [("max_tokens", 5), ("top_p", 0.5), ("stop", ["\n"]), ("seed", 1), ("n", 2),
                         ("tools", [{"type": "function"}]), ("response_format", {"type": "json_object"}),
                         ("logit_bias", {"1": 2}), ("presence_penalty", 1.0), ("some_future_param", 1)]:
        assert key(chat(("user", "hi"), **{param: value})) != key(base), param
    other_model = BackendRequest(kind="chat", model="other", messages=base.messages, params=base.params)
    assert key(other_model) != key(base)


def test_key_is_independent_of_param_order() -> None:
    one, other = chat(("user", "hi"), top_p=1, max_tokens=3), chat(("user", "hi"), max_tokens=3, top_p=1)
    assert key(one) == key(other)


def test_tenant_keys_share_a_cluster_hash_tag_and_hide_the_tenant() -> None:
    keys = TenantKeys.for_tenant("acme-corp")
    names = [keys.entry("h"), keys.vectors("s"), keys.expiries("s")]
    assert all(name.startswith(f"turnout:{{{keys.tag}}}:") for name in names)
    assert "acme" not in "".join(names)
    assert TenantKeys.for_tenant("other").tag != keys.tag


def test_semantic_scope_covers_all_but_the_last_user_turn() -> None:
    earlier = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")]
    scope = semantic_scope(chat(*earlier, ("user", "What is 2+2?")))
    assert scope == semantic_scope(chat(*earlier, ("user", "Something else entirely")))
    assert scope != semantic_scope(chat(("system", "Be verbose."), *earlier[1:], ("user", "What is 2+2?")))
    assert scope != semantic_scope(chat(*earlier, ("user", "What is 2+2?"), max_tokens=9))


@pytest.mark.parametrize(("params", "deterministic"), [
    ({"temperature": 0}, True), ({"temperature": 0.0, "top_p": 0.2}, True), ({"temperature": 0.7}, False),
    ({}, False), ({"temperature": 1, "seed": 3}, True),
])
def test_determinism(params: dict[str, object], deterministic: bool) -> None:
    request = BackendRequest(kind="completion", model="m", prompt="x", params=params)
    assert is_deterministic(request) is deterministic


# header policy -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "mode"), [
    ({}, "use"),
    ({"Cache-Control": "no-cache"}, "bypass"),
    ({"cache-control": "max-age=0, No-Cache"}, "bypass"),
    ({"Pragma": "no-cache"}, "bypass"),
    ({"X-Turnout-Cache": "bypass"}, "bypass"),
    ({"Cache-Control": "no-store"}, "no-store"),
    ({"Cache-Control": "no-cache, no-store"}, "no-store"),
    ({"x-turnout-cache": "no-store"}, "no-store"),
    ({"Cache-Control": "max-age=60"}, "use"),
])
def test_cache_mode_from_headers(headers: dict[str, str], mode: str) -> None:
    assert cache_mode_from_headers(headers) == mode


# guards --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "cached", "reason"), [
    ("Convert 5 km to miles", "Convert 50 km to miles", "numbers"),
    ("What is 1,000 divided by 8?", "What is 1000 divided by 9?", "numbers"),
    ("What size is A5 paper?", "What size is A4 paper?", "numbers"),  # digits inside a name
    ("Convert 0x1F4 to decimal.", "Convert 0x2F4 to decimal.", "numbers"),  # digits after a letter
    ("Why is my build not failing?", "Why is my build failing?", "negation"),
    ("Why doesn't the cache work?", "Why does the cache work?", "negation"),
    ("How do I turn on Bluetooth?", "How do I turn off Bluetooth?", "opposite"),
    ("Sort the list in ascending order", "Sort the list in descending order", "opposite"),
    ("How do I encrypt a file with gpg?", "How do I decrypt a file with gpg?", "opposite"),
    ("Who founded Microsoft?", "Who founded Apple?", "entity"),
    ("What does os.path.join do?", "What does os.path.exists do?", "entity"),
    ("Translate 'good morning' to Spanish", "Translate 'good night' to Spanish", "entity"),
    ("Convert Celsius to Fahrenheit", "Convert Fahrenheit to Celsius", "direction"),
    ("How long is the drive from Boston to New York City?", "How long is the drive from New York City to Boston?",
     "direction"),  # several words on each side of "to"
    ("How do I turn a Word document into a PDF file?", "How do I turn a PDF file into a Word document?", "direction"),
])
def test_guards_veto_contrasts(query: str, cached: str, reason: str) -> None:
    vetoed = guards.veto(query, cached)
    assert vetoed is not None and vetoed.startswith(reason)


@pytest.mark.parametrize(("query", "cached"), [
    ("How do I reverse a list in Python?", "Python: what is the way to reverse a list?"),
    ("Convert five km to miles", "How many miles are 5 km?"),
    ("Why doesn't my code compile?", "Why won't my code compile?"),
    ("What's the capital of France?", "Tell me the capital city of France."),
    ("e.g. how would I sort a dict by value", "How can I sort a dictionary by its values?"),
    ("How long is the drive to Boston from New York City?", "How long is the drive from New York City to Boston?"),
    ("How to add a key to a dictionary", "How do I add a key to a dictionary?"),
    ("What is 0x1F4 in decimal?", "Convert 0x1F4 to decimal."),
    ("How do I calibrate the bed of a 3D printer?", "How can I calibrate a 3D printer's bed?"),
])
def test_guards_let_paraphrases_through(query: str, cached: str) -> None:
    assert guards.veto(query, cached) is None


def test_letters_inside_a_word_with_digits_are_no_name_of_their_own() -> None:
    assert guards.entities("Is an EC2 instance or a 3D printer better for 0x1F4?") == {"ec2", "3d", "0x1f4"}


def test_a_numbered_name_on_one_side_only_is_no_number_mismatch() -> None:
    assert guards.number_mismatch("How do I scale a k8s deployment?", "How do I scale a Kubernetes deployment?") is None
    assert guards.number_mismatch("Is an EC2 instance a VM?", "Is an EC2 instance a virtual machine?") is None


# verifier (similarities fixed here; the model's own are measured by bench/cache/semantic_bench.py) -----

@pytest.mark.parametrize(("query", "cached", "similarity"), [
    ("How do I handle errors in async/await in JavaScript?",
     "What's the right way to catch errors with async/await in JS?", 0.95),  # JS = JavaScript, not a new name
    ('Translate "good morning" into French.', 'How do you say "good morning" in French?', 0.92),
])
def test_verifier_accepts_paraphrases_a_soft_guard_flags(query: str, cached: str, similarity: float) -> None:
    assert verifier.verdict(query, cached, similarity, min_probability=0.8) is None


@pytest.mark.parametrize(("query", "cached", "similarity", "reason"), [
    ("How do I enable 2FA?", "How do I disable 2FA?", 0.99, "opposite"),  # hard guards stay absolute
    ("How do I delete a local branch in git?", "How do I delete a branch in git?", 0.92, "verifier"),
    ("What is the capital of Austria?", "What is the capital of Australia?", 0.90, "entity"),
])
def test_verifier_rejects_contrasts(query: str, cached: str, similarity: float, reason: str) -> None:
    rejected = verifier.verdict(query, cached, similarity, min_probability=0.8)
    assert rejected is not None and rejected.startswith(reason)


def test_verifier_probability_grows_with_similarity() -> None:
    low, high = (verifier.probability(verifier.features("How do I reverse a list?", "Reverse a Python list", s))
                 for s in (0.6, 0.9))
    assert 0.0 <= low < high <= 1.0


def test_alignment_finds_the_one_swapped_word_and_tolerates_word_order() -> None:
    aligner = alignment.shared_aligner()
    swapped = aligner.align("How do I cook rice in a microwave?", "How do I cook rice on the stove?")
    reordered = aligner.align("How do I reverse a list in Python?", "What is the way to reverse a Python list?")
    assert swapped.unmatched >= 2 and swapped.worst < alignment.MATCHED
    assert reordered.unmatched == 0 and reordered.worst > 0.99


def test_aligned_verifier_uses_its_own_min_probability() -> None:
    query, cached = "Can you explain what a closure is in JavaScript?", "What is a closure in JavaScript?"
    p = verifier.model_probability(query, cached, 0.95, "aligned")
    assert 0.0 <= p <= 1.0
    assert (verifier.verdict(query, cached, 0.95, model="aligned") is None) == (
        p >= verifier.default_min_probability("aligned"))
    hard = verifier.verdict("How do I enable 2FA?", "How do I disable 2FA?", 0.99, model="aligned")
    assert hard is not None and hard.startswith("opposite")


def test_contextual_words_depend_on_their_sentence() -> None:
    """The static table gives "bank" one vector; MiniLM's token outputs give it one per sentence."""
    aligner = contextual.shared_contextual_aligner()
    river, money = aligner.words("Who owns the bank of the river?"), aligner.words("Who owns the bank on Main Street?")
    assert len(river.weights) == 7  # every alphabetic word, function words included
    assert float(river.vectors[3] @ money.vectors[3]) < 0.98  # "bank", in two senses (0.95 after 2 layers)
    static = alignment.shared_aligner()
    bank = [static.words(text).vectors[0] for text in ("bank of the river", "bank account")]  # "bank" first
    assert float(bank[0] @ bank[1]) > 0.999


def test_contextual_verifier_vetoes_a_negation_and_a_qualifier_and_accepts_a_paraphrase() -> None:
    negated = ("Is coffee not bad for your heart?", "Is coffee bad for your heart?", 0.9)
    assert verifier.verdict(*negated, model="contextual").startswith("negation")  # the hard guard, first
    assert verifier.model_probability(*negated, "contextual") < verifier.default_min_probability("contextual")
    qualified = verifier.verdict("How do I delete a local branch in git?", "How do I delete a branch in git?", 0.92,
                                 model="contextual")
    assert qualified is not None and qualified.startswith("verifier")
    assert verifier.verdict("What's a simple way to reverse a list in Python?", "How do I reverse a Python list?",
                            0.9, model="contextual") is None


def test_contextual_verifier_is_deterministic() -> None:
    query, cached = "How can I capture my screen on a Mac?", "How do I take a screenshot on macOS?"
    aligner = contextual.shared_contextual_aligner()
    first = (aligner.align(query, cached), verifier.model_probability(query, cached, 0.8, "contextual"))
    aligner.words.cache_clear()  # recomputed by the model, not read back from the cache
    assert (aligner.align(query, cached), verifier.model_probability(query, cached, 0.8, "contextual")) == first
    assert verifier.needs_model_call("contextual") and not verifier.needs_model_call("aligned")


# codec ---------------------------------------------------------------------------------------------

def test_codec_round_trip_keeps_events_exactly() -> None:
    events = [StreamEvent(text="Hé"), StreamEvent(text="", extra={"tool_calls": [{"id": "1"}]}),
              StreamEvent(text=" there"), StreamEvent(finish_reason="stop", usage={"total_tokens": 3})]
    decoded = decode(encode("m", 123, events))
    assert (decoded.model, decoded.created, decoded.events) == ("m", 123, events)


def test_only_finished_responses_are_complete() -> None:
    assert is_complete([StreamEvent(text="a"), StreamEvent(finish_reason="length")])
    assert not is_complete([StreamEvent(text="a")])
    assert not is_complete([StreamEvent(finish_reason="error")])
    assert not is_complete([])


# breaker -------------------------------------------------------------------------------------------

def test_breaker_opens_probes_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown_s=5, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()

    now[0] = 5.0
    assert breaker.allow() and breaker.state == "half-open"  # the probe
    assert not breaker.allow()  # only one probe at a time
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()

    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.times_opened == 1


def test_a_probe_that_never_reports_does_not_wedge_the_breaker() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown_s=1, clock=lambda: now[0])
    breaker.failure()
    now[0] = 1.0
    assert breaker.allow()  # probe starts, then is cancelled without a result
    now[0] = 2.0
    assert breaker.allow()


# in-process single-flight --------------------------------------------------------------------------

async def test_single_flight_follower_gives_up_after_its_wait() -> None:
    flights = SingleFlight(wait_s=0.05)
    async with flights.join("k") as leader:
        assert leader.leader
        async with flights.join("k") as follower:  # the leader never publishes in time
            assert not follower.leader and follower.events is None
    async with flights.join("k") as next_leader:
        assert next_leader.leader


async def test_single_flight_never_hands_on_a_partial_response() -> None:
    flights = SingleFlight(wait_s=10)

    async def follower() -> list[StreamEvent] | None:
        async with flights.join("k") as flight:
            return flight.events

    async with flights.join("k") as leader:
        waiting = asyncio.create_task(follower())
        await asyncio.sleep(0)
        leader.publish([StreamEvent(text="cut")])  # the stream broke before its finish reason
    assert await waiting is None


async def test_single_flight_publishes_to_all_followers() -> None:
    flights = SingleFlight(wait_s=10)
    result = [StreamEvent(text="x"), StreamEvent(finish_reason="stop")]

    async def follower() -> list[StreamEvent] | None:
        async with flights.join("k") as flight:
            return flight.events

    async with flights.join("k") as leader:
        followers = [asyncio.create_task(follower()) for _ in range(3)]
        await asyncio.sleep(0)
        leader.publish(result)
    assert await asyncio.gather(*followers) == [result] * 3


def test_contextual_alignment_does_not_count_a_reworded_function_word() -> None:
    """Function words are aligned but are not "unmatched words": "can"/"do" is not a one-word swap."""
    aligner = contextual.shared_contextual_aligner()
    reworded = aligner.align("How can I convert a PDF to plain text on Linux?",
                             "How do I convert a PDF to plain text on Linux?")
    swapped = aligner.align("How do I convert a PDF to plain text on Windows?",
                            "How do I convert a PDF to plain text on Linux?")
    assert reworded.unmatched == 0 and reworded.worst > contextual.MATCHED
    assert swapped.unmatched >= 1 and swapped.worst < reworded.worst


@pytest.mark.parametrize("query, cached", [
    ("How do I unhide a column in Google Sheets?", "How do I hide a column in Google Sheets?"),
    ("How do I make a Python object immutable?", "How do I make a Python object mutable?"),
    ("How do I deactivate my account?", "How do I activate my account?"),
    ("How do I zoom out on a PDF?", "How do I zoom in on a PDF?"),
    ("How do I log out of Slack?", "How do I log in to Slack?"),
    ("How do I lower the pH of my pool?", "How do I raise the pH of my pool?"),
    ("Which houseplants are non-toxic to cats?", "Which houseplants are toxic to cats?"),  # "non-" hyphenated
    ("How do I turn off Wi-Fi on my Mac?", "How do I turn on Wi-Fi on my Mac?"),  # "on" twice on one side
    ("How do I turn on Bluetooth on a Mac?", "How do I switch off Bluetooth on a Mac?"),  # two toggle verbs
    ("How do I shut off the water heater?", "How do I switch on the water heater?"),
    ("How do I enable dark mode in VS Code?", "How do I turn off dark mode in VS Code?"),  # a word / a particle
    ("How do I turn on location services on iPhone?", "How do I disable location services on iPhone?"),
    ("How do I switch on auto-save in Word?", "How do I deactivate auto-save in Word?"),
    ("What's the best way to store fresh basil?", "What's the best way to store dried basil?"),
    ("When does the school year end in Japan?", "When does the school year start in Japan?"),
    ("What is the coldest lake in Europe?", "What is the warmest lake in Europe?"),  # superlatives
    ("Should I get a bigger chainring?", "Should I get a smaller chainring?"),  # comparatives, doubled g
    ("Which months are drier in Lisbon?", "Which months are wetter in Lisbon?"),
    ("Is higher screen brightness better for my eyes?", "Is lower screen brightness better for my eyes?"),
])
def test_opposite_prefixes_particles_and_verbs_are_hard_vetoes(query: str, cached: str) -> None:
    reason = verifier.verdict(query, cached, 0.97, model="aligned")
    assert reason is not None and reason.startswith("opposite")


@pytest.mark.parametrize("query, cached", [
    ("How do I fill out a tax form?", "How do I fill in a tax form?"),  # the same particle verb
    ("How do I switch off Bluetooth on a Mac?", "How do I turn off Bluetooth on a Mac?"),  # toggle verbs agree
    ("How do I turn on dark mode in Slack?", "How do I switch on dark mode in Slack?"),
    ("How do I enable dark mode in Slack?", "How do I turn on dark mode in Slack?"),
    ("How do I turn off Wi-Fi and turn on Bluetooth?", "How do I disable Wi-Fi and enable Bluetooth?"),  # both ways
    ("How do I debug my Python code?", "How do I find a bug in my Python code?"),  # not de- + bug
    ("What is the best way to deduplicate a list?", "How do I remove duplicates from a list?"),
    ("How do I zoom in on a PDF?", "How can I zoom in on a PDF?"),
    ("How do I change the order of users in a list?", "How can I reorder the users of a list?"),  # no -er adjective
    ("Which is the largest ocean?", "What is the biggest ocean?"),  # both superlatives say big
    ("How do I run a function on a separate thread?", "How do I run a function in a separate thread?"),
])
def test_opposite_guards_leave_lookalikes_alone(query: str, cached: str) -> None:
    assert all(guard(query, cached) is None for guard in (
        guards.prefix_mismatch, guards.particle_mismatch, guards.antonym_mismatch, guards.toggle_mismatch))


def test_one_sided_scores_tell_an_added_word_from_a_swapped_one() -> None:
    """An added qualifier leaves words unmatched on one side only, a swap on both."""
    aligner = contextual.shared_contextual_aligner()
    added = aligner.one_sided("How do I repot a large cactus?", "How do I repot a cactus?")
    swapped = aligner.one_sided("How do I cook rice in a microwave?", "How do I cook rice on the stove?")
    reworded = aligner.one_sided("How can I repot a cactus?", "How do I repot a cactus?")
    assert added[2] >= 1 and added[3] == 0
    assert swapped[3] >= 1
    assert reworded == (0.0, 0.0, 0.0, 0.0)


def test_contextual_verifier_rejects_an_added_qualifier() -> None:
    reason = verifier.verdict("How do I paint kitchen cabinets for a school project?",
                              "How do I paint kitchen cabinets?", 0.9, model="contextual")
    assert reason is not None


@pytest.mark.parametrize("query, cached", [
    ("Where can I see cherry blossoms in Tokyo?", "When do cherry trees bloom in Tokyo?"),
    ("When do dogs howl at sirens?", "Why do dogs howl at sirens?"),
    ("Who built the Great Wall of China?", "Why was the Great Wall of China built?"),
    ("Where's the nearest place to see the aurora?", "When's the best time to see the aurora?"),
    ("How long is the Brooklyn Bridge?", "When was the Brooklyn Bridge opened?"),  # an amount, a time
    ("Who designed the Eiffel Tower?", "How many people visit the Eiffel Tower?"),
])
def test_different_question_words_are_a_hard_veto(query: str, cached: str) -> None:
    reason = verifier.verdict(query, cached, 0.95, model="aligned")
    assert reason is not None and reason.startswith("question")


@pytest.mark.parametrize("query, cached", [
    ("In what year did World War II end?", "When did World War II end?"),  # one side has no question word
    ("Which artist painted the Sistine Chapel ceiling?", "Who painted the ceiling of the Sistine Chapel?"),
    ("How far is the Moon from Earth?", "What is the distance between the Earth and the Moon?"),
    ("Where and when is the next eclipse visible?", "When and where can I see the next eclipse?"),
    ("How long does it take to hard-boil an egg?", "How much time does a hard-boiled egg need?"),  # amounts alike
])
def test_question_word_guard_leaves_rewordings_alone(query: str, cached: str) -> None:
    assert guards.question_word_mismatch(query, cached) is None


def test_swap_contrasts_replace_one_word_by_a_related_non_synonym() -> None:
    from bench.cache.swap_contrasts import SYNONYM, Swapper

    aligner = alignment.shared_aligner()
    swapper = Swapper(aligner, ["stove", "microwave", "oven", "kettle", "rice", "cooking"])
    text = "How do I cook rice in a microwave?"
    swapped = swapper.swapped(text, 2)  # the third content word: "microwave"
    assert swapped is not None and swapped.startswith("How do I cook rice in a ") and swapped != text
    new = swapped.removeprefix("How do I cook rice in a ").rstrip("?")
    similarity = float(aligner.words(new).vectors[0] @ aligner.words("microwave").vectors[0])
    assert similarity < SYNONYM and new[:4] != "micr"
