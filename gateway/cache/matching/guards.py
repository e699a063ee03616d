"""Cheap lexical checks that veto a semantic hit the embedding similarity alone would allow.

Sentence embeddings put "enable X" next to "disable X", and "5 km" next to "50 km": these are the
false hits that hurt, because the cached answer is confidently wrong. Each guard compares the new
prompt with the cached prompt and names the mismatch, or says nothing. They are deliberately strict:
a vetoed paraphrase costs one backend call, a wrong answer costs trust.

`GUARDS` is the one list of them. The hard ones veto outright; the soft ones are evidence the verifier
(verifier.py) weighs, because on their own they would refuse too many true paraphrases. The word lists
grow with the false hits the bench and users find (bench/cache/RESULTS.md, section 4, has the history).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
_NUMBER = re.compile(r"(?<![A-Za-z\d.])-?\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|(?<!\w)'([^'\s][^']*[^'\s])'(?!\w)")
_ABBREVIATION = re.compile(r"(?:[a-z]\.)+[a-z]?")
_IDENTIFIER = re.compile(
    r"(?<![\w.])\w+(?:[./]\w+)+|\b\w+_\w+\b|\b[a-z]+[A-Z]\w*\b|\b(?=\w*\d)(?=\w*[A-Za-z])\w+\b")
_TOWARD = re.compile(r"\b(?:to|into)\b|->|→", re.IGNORECASE)
_DIRECTION = re.compile(
    rf"\b(\w+)\s+(?:{_TOWARD.pattern})\s+(?:(?:a|an|the|my|your|its)\s+)?(\w+)", re.IGNORECASE)
_CAUSE = re.compile(r"\bwhat (?:makes|made|causes|caused)\b|\breasons?\b")
_CAMEL_HUMP = re.compile(r"(?<=[a-z])(?=[A-Z])|-")

NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
    "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "dozen": "12", "half": "0.5",
}
"""Spelled-out numbers normalised to digits. "one" is left out: it is far more often a pronoun (and
"single", "double" are more often idioms)."""

NEGATIONS = frozenset({
    "not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot", "nowhere",
    "excluding", "unless",
})
"""("except" is left out: in a coding gateway it is mostly Python's keyword.)"""

ANTONYMS: tuple[tuple[str, str], ...] = (
    ("on", "off"), ("enable", "disable"), ("enabled", "disabled"), ("increase", "decrease"),
    ("add", "remove"), ("add", "delete"), ("create", "delete"), ("create", "destroy"), ("insert", "delete"),
    ("encrypt", "decrypt"), ("encode", "decode"), ("compress", "decompress"), ("zip", "unzip"),
    ("serialize", "deserialize"), ("install", "uninstall"), ("mount", "unmount"), ("lock", "unlock"),
    ("connect", "disconnect"), ("subscribe", "unsubscribe"), ("follow", "unfollow"), ("show", "hide"),
    ("before", "after"), ("above", "below"), ("over", "under"), ("inside", "outside"), ("min", "max"),
    ("minimum", "maximum"), ("minimize", "maximize"), ("more", "less"), ("more", "fewer"), ("most", "least"),
    ("buy", "sell"), ("import", "export"), ("upload", "download"), ("start", "stop"), ("open", "close"),
    ("push", "pull"), ("ascending", "descending"), ("first", "last"), ("largest", "smallest"),
    ("biggest", "smallest"), ("highest", "lowest"), ("longest", "shortest"), ("oldest", "newest"),
    ("upper", "lower"), ("uppercase", "lowercase"), ("left", "right"), ("true", "false"), ("win", "lose"),
    ("input", "output"), ("hot", "cold"), ("best", "worst"), ("fastest", "slowest"), ("faster", "slower"),
    ("cheapest", "expensive"), ("cheap", "expensive"), ("allow", "block"), ("allow", "deny"),
    ("accept", "reject"), ("send", "receive"), ("read", "write"), ("client", "server"), ("merge", "split"),
    ("join", "split"), ("rise", "fall"), ("gain", "lose"), ("gain", "loss"), ("profit", "loss"),
    ("positive", "negative"), ("early", "late"), ("earlier", "later"),
    ("synchronous", "asynchronous"), ("sync", "async"), ("public", "private"), ("pros", "cons"),
    ("advantages", "disadvantages"), ("benefits", "drawbacks"), ("legal", "illegal"), ("safe", "unsafe"),
    ("valid", "invalid"), ("visible", "invisible"), ("with", "without"), ("include", "exclude"),
    ("increment", "decrement"), ("expand", "collapse"), ("attach", "detach"), ("freeze", "unfreeze"),
    ("pause", "resume"), ("approve", "reject"), ("hire", "fire"), ("arrive", "depart"), ("north", "south"),
    ("east", "west"), ("up", "down"), ("male", "female"), ("day", "night"),
    ("summer", "winter"), ("morning", "evening"), ("prefix", "suffix"), ("head", "tail"), ("top", "bottom"),
    ("sunrise", "sunset"), ("wet", "dry"), ("heavy", "light"), ("strong", "weak"), ("rich", "poor"),
    ("happy", "sad"), ("love", "hate"), ("agree", "disagree"), ("like", "dislike"),
    ("vertical", "horizontal"), ("horizontally", "vertically"), ("row", "column"), ("local", "remote"),
    ("internal", "external"), ("ipv4", "ipv6"), ("http", "https"), ("tcp", "udp"), ("get", "post"),
    ("frontend", "backend"), ("lend", "borrow"), ("teach", "learn"), ("give", "take"),
    # common opposites beyond the coding ones
    ("raise", "lower"), ("lengthen", "shorten"), ("widen", "narrow"), ("brighten", "darken"),
    ("thicken", "thin"), ("tighten", "loosen"), ("soften", "harden"), ("upgrade", "downgrade"),
    ("indoor", "outdoor"), ("indoors", "outdoors"), ("inbound", "outbound"), ("grow", "shrink"),
    ("expand", "shrink"), ("heat", "cool"), ("warm", "cool"), ("warmer", "cooler"), ("long", "short"),
    ("longer", "shorter"), ("wide", "narrow"), ("thick", "thin"), ("bright", "dark"), ("light", "dark"),
    ("loose", "tight"), ("full", "empty"), ("fill", "empty"), ("fast", "slow"), ("old", "new"),
    ("young", "old"), ("big", "small"), ("large", "small"), ("high", "low"), ("higher", "lower"),
    ("easy", "hard"), ("easier", "harder"), ("soft", "hard"), ("beginner", "advanced"), ("boy", "girl"),
    ("men", "women"), ("man", "woman"), ("husband", "wife"), ("mother", "father"), ("son", "daughter"),
    ("brother", "sister"), ("raw", "cooked"), ("fresh", "frozen"), ("clean", "dirty"), ("enter", "exit"),
    ("entry", "exit"), ("login", "logout"), ("inhale", "exhale"), ("ascend", "descend"),
    ("accelerate", "decelerate"), ("synonym", "antonym"), ("synonym", "opposite"), ("forward", "backward"),
    ("forwards", "backwards"), ("dawn", "dusk"), ("offense", "defense"), ("offensive", "defensive"),
    ("attack", "defend"), ("winner", "loser"), ("success", "failure"), ("pass", "fail"), ("sharp", "dull"),
    ("rural", "urban"), ("domestic", "international"), ("domestic", "foreign"), ("manual", "automatic"),
    ("online", "offline"), ("absolute", "relative"), ("static", "dynamic"), ("explicit", "implicit"),
    ("inner", "outer"), ("major", "minor"), ("singular", "plural"), ("past", "future"), ("rent", "buy"),
    ("debit", "credit"), ("deposit", "withdraw"), ("income", "expense"), ("asset", "liability"),
    ("arrival", "departure"), ("arrivals", "departures"), ("sender", "receiver"),
    ("parent", "child"), ("ancestor", "descendant"), ("predecessor", "successor"), ("previous", "next"),
    ("odd", "even"), ("maximum", "minimum"), ("overweight", "underweight"), ("sweet", "savory"),
    ("fresh", "dried"), ("fresh", "canned"), ("fresh", "stale"),
    ("sweet", "sour"), ("quiet", "loud"), ("deep", "shallow"), ("heavier", "lighter"), ("increase", "reduce"),
    ("increase", "lower"), ("strengthen", "weaken"), ("tall", "short"),
    ("cold", "warm"), ("near", "far"),
    ("start", "end"), ("begin", "end"), ("beginning", "end"),
)
"""Opposite words (compared after stemming): one in the new prompt and only its opposite in the
cached one means the question was turned around."""

AUXILIARIES = frozenset({
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "should", "would", "will", "shall",
    "has", "have", "may", "might", "must",
})

STOP_CAPITALISED = frozenset({"i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "please", "hi", "hello"})

_FUNCTION_WORDS_TEXT = """
a an the this that these those some any each every all of to in on at by for with from into onto about as
and or but if then so than too very just also only own same such
i me my mine we us our you your yours he him his she her it its they them their what which who whom whose
when where why how whether is am are was were be been being do does did doing done have has had having
can could should would will shall may might must let let's what's how's it's i'm
way ways best good right proper correct simplest easiest possible please thanks tell explain show give
describe know want need like get make use using used
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split()) - {word for pair in ANTONYMS for word in pair}
"""Words that do not say what a question is about, for the substitution guard. Words with an
opposite (on/off, get/post, …) stay content words."""


def stem(word: str) -> str:
    """Crude suffix stripping, applied to both sides alike: enough to make enable/enables/enabled
    and enabling one word for the guards."""
    word = word.lower().replace("’", "'")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


GRADABLE = frozenset({
    "hot", "cold", "warm", "cool", "big", "small", "large", "high", "low", "fast", "slow", "cheap", "old", "new",
    "young", "long", "short", "tall", "heavy", "light", "easy", "hard", "early", "late", "strong", "weak",
    "thick", "thin", "wide", "narrow", "near", "far", "wet", "dry", "tight", "loose", "deep", "shallow", "soft",
    "bright", "dark", "loud", "quiet", "safe", "rich", "poor", "happy", "sad", "sharp", "dull", "sweet", "sour",
    "full", "empty",
})
"""The adjectives of ANTONYMS whose comparative and superlative count as the adjective itself (coldest /
warmest, a bigger / smaller cog): spelled out, so no noun ending in -er (user, order) is read as one."""


def _degrees(adjective: str) -> tuple[str, str]:
    """Comparative and superlative: large → larger, easy → easier, big → bigger (a final consonant after one
    vowel doubles), cool → cooler."""
    if adjective.endswith("e"):
        return adjective + "r", adjective + "st"
    if adjective.endswith("y"):
        return adjective[:-1] + "ier", adjective[:-1] + "iest"
    if re.fullmatch(r"[^aeiou]*[aeiou][^aeiouwy]", adjective):
        adjective += adjective[-1]
    return adjective + "er", adjective + "est"


_DEGREE_OF = {form: adjective for adjective in GRADABLE for form in _degrees(adjective)}
_ANTONYM_STEMS = tuple((stem(a), stem(b)) for a, b in ANTONYMS)


@lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    return tuple(match.group(0) for match in _WORD.finditer(text))


@lru_cache(maxsize=4096)
def _stems(text: str) -> frozenset[str]:
    """Stems of the words, and of the adjective of a comparative or superlative of GRADABLE (so "lower"
    stays the opposite of "raise" and also reads as "low")."""
    words = _words(text)
    return frozenset(stem(word) for word in words) | {stem(_DEGREE_OF[w]) for w in map(str.lower, words)
                                                      if w in _DEGREE_OF}


def numbers(text: str) -> frozenset[str]:
    """Every number in the text, digits or words, normalised ("1,000" = "1000", "five" = "5")."""
    found = set()
    for match in _NUMBER.finditer(text):
        raw = match.group(0).lstrip("+")
        compact = raw.replace(",", "") if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+", raw) else raw
        try:
            value = float(compact.replace(",", "."))
            found.add(f"{value:g}")
        except ValueError:
            found.add(compact)
    for word in _words(text):
        if (digits := NUMBER_WORDS.get(word.lower())) is not None:
            found.add(f"{float(digits):g}")
    return frozenset(found)


def is_negated(text: str) -> bool:
    words = [word.lower().replace("’", "'") for word in _words(text)]
    return any(word in NEGATIONS or word.endswith("n't") for word in words)


@lru_cache(maxsize=4096)
def entities(text: str) -> frozenset[str]:
    """Names and identifiers: capitalised words not opening a sentence, acronyms, code-like tokens
    (snake_case, dotted.names, camelCase, v2) and quoted strings; all lower-cased."""
    found = set()
    for match in _WORD.finditer(text):
        word = match.group(0)
        if not word[0].isupper() or word.lower() in STOP_CAPITALISED or _touches_digit(text, match):
            continue
        if not _opens_sentence(text, match.start()) or (len(word) > 1 and word.isupper()):
            found.add(re.sub(r"['’]s$", "", word.lower()))
    for match in _IDENTIFIER.finditer(text):
        if not _ABBREVIATION.fullmatch(token := match.group(0).lower()):
            found.add(token)
    for match in _QUOTED.finditer(text):
        found.add(next(group for group in match.groups() if group).lower())
    return frozenset(found)


def _touches_digit(text: str, match: re.Match[str]) -> bool:
    """Letters inside a word with digits ("F" in 0x1F4, "A" in A4): that word is an identifier already."""
    return text[match.start() - 1 : match.start()].isdigit() or text[match.end() : match.end() + 1].isdigit()


def _opens_sentence(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'(“‘*#-")
    return not before or before[-1] in ".!?:;\n"


def _contains(text: str, entity: str) -> bool:
    """`entity` occurs as a word, or is an initialism of words there (AI = artificial intelligence,
    JS = JavaScript)."""
    return (re.search(rf"(?<!\w){re.escape(entity)}(?!\w)", text, re.IGNORECASE) is not None
            or entity in _initialisms(text))


@lru_cache(maxsize=4096)
def _initialisms(text: str) -> frozenset[str]:
    """Initial letters of every run of 2 to 5 consecutive words (camelCase humps count as words)."""
    parts = [part for word in _words(text) for part in _CAMEL_HUMP.split(word) if part]
    initials = "".join(part[0].lower() for part in parts)
    return frozenset(initials[i : i + n] for n in range(2, 6) for i in range(len(initials) - n + 1))


_LETTERS_DIGITS = re.compile(r"\b(?=[A-Za-z\d]*[A-Za-z])[A-Za-z\d]*\d[A-Za-z\d]*\b")


def _numbered_names(text: str) -> dict[str, frozenset[str]]:
    """Words of letters and digits (A4, mp3, x86, EC2, 0x1F4), grouped by their letters: "a" → {"a3"}.
    numbers() skips digits after a letter, so "0x1F4" / "0x2F4" differ only here."""
    found: dict[str, set[str]] = {}
    for match in _LETTERS_DIGITS.finditer(text):
        name = match.group(0).lower()
        found.setdefault(re.sub(r"\d", "", name), set()).add(name)
    return {letters: frozenset(names) for letters, names in found.items()}


def number_mismatch(query: str, cached: str) -> str | None:
    """Different numbers, or the same letters with other digits inside a name (A3 / A4 paper, mp3 / mp4);
    a numbered name on one side only is left to the other checks (k8s / Kubernetes, EC2 / "an AWS VM")."""
    if numbers(query) != numbers(cached):
        return "numbers"
    query_names, cached_names = _numbered_names(query), _numbered_names(cached)
    if any(query_names[letters] != cached_names[letters] for letters in query_names.keys() & cached_names.keys()):
        return "numbers"
    return None


def negation_mismatch(query: str, cached: str) -> str | None:
    return "negation" if is_negated(query) != is_negated(cached) else None


def antonym_mismatch(query: str, cached: str) -> str | None:
    query_stems, cached_stems = _stems(query), _stems(cached)
    for a, b in _ANTONYM_STEMS:
        query_a, query_b = a in query_stems, b in query_stems
        cached_a, cached_b = a in cached_stems, b in cached_stems
        if (query_a and not query_b and cached_b and not cached_a) or (
            query_b and not query_a and cached_a and not cached_b
        ):
            return f"opposite:{a}/{b}"
    return None


OPPOSITE_PREFIXES = ("un", "dis", "de", "non", "im")
"""X in one prompt and prefix+X only in the other is an opposite the ANTONYMS list need not spell out:
hide/unhide, mute/unmute, activate/deactivate, mutable/immutable ("in" is left out: inside, install)."""
NOT_OPPOSITES = frozenset({"debug", "deduplicate", "design", "display", "discover", "define", "detail", "deliver",
                           "improve", "impact", "import", "impress", "deposit", "decline", "dispose", "impose"})
"""Words that only look like prefix + word."""

_NOT_OPPOSITE_STEMS = frozenset(stem(word) for word in NOT_OPPOSITES)

PARTICLES = (("in", "out"), ("on", "off"))
"""The same verb with opposite particles: zoom in/zoom out, log in/log out, opt in/opt out, and turn on/turn
off where "on" also stands as a preposition ("turn off Bluetooth on Windows", which ANTONYMS' on/off misses:
both words on one side). up/down are opposites anywhere."""
SAME_PARTICLE_VERBS = frozenset({"fill"})  # "fill in a form" = "fill out a form"
_PARTICLE = re.compile(r"\b([A-Za-z]+)\s+(in|out|on|off)\b", re.IGNORECASE)


_NON_HYPHEN = re.compile(r"\bnon-(?=[A-Za-z])", re.IGNORECASE)


def prefix_mismatch(query: str, cached: str) -> str | None:
    """One side has a word, the other only that word with an opposite prefix ("block" / "unblock", "toxic" /
    "non-toxic")."""
    query_stems, cached_stems = _stems(_NON_HYPHEN.sub("non", query)), _stems(_NON_HYPHEN.sub("non", cached))
    for source, other in ((query_stems, cached_stems), (cached_stems, query_stems)):
        for word in source - other - _NOT_OPPOSITE_STEMS:
            for prefix in OPPOSITE_PREFIXES:
                base = word[len(prefix):]
                if word.startswith(prefix) and len(base) >= 3 and base in other and base not in source:
                    return f"opposite:{base}/{word}"
    return None


def particle_mismatch(query: str, cached: str) -> str | None:
    """"zoom in" in one prompt and "zoom out" in the other (the verb on both sides, each particle on one)."""
    def phrases(text: str) -> set[tuple[str, str]]:
        return {(stem(verb), particle.lower()) for verb, particle in _PARTICLE.findall(text)
                if verb.lower() not in SAME_PARTICLE_VERBS}

    query_phrases, cached_phrases = phrases(query), phrases(cached)
    for a, b in PARTICLES:
        for verb, particle in query_phrases - cached_phrases:
            if particle not in (a, b):
                continue
            opposite = b if particle == a else a
            if (verb, opposite) in cached_phrases - query_phrases:
                return f"opposite:{verb} {particle}/{verb} {opposite}"
    return None


TOGGLE_VERBS = frozenset({"turn", "switch", "power", "flip", "toggle", "shut"})
_SWITCHED_ON = frozenset(stem(word) for word in ("enable", "activate"))
_SWITCHED_OFF = frozenset(stem(word) for word in ("disable", "deactivate"))


def _switched(text: str) -> frozenset[str]:
    """Which way the prompt switches something: "on" for turn / switch / power on, enable, activate;
    "off" for their opposites. Both when it does both."""
    found = {particle.lower() for verb, particle in _PARTICLE.findall(text)
             if verb.lower() in TOGGLE_VERBS and particle.lower() in ("on", "off")}
    stems = _stems(text)
    if stems & _SWITCHED_ON:
        found.add("on")
    if stems & _SWITCHED_OFF:
        found.add("off")
    return frozenset(found)


def toggle_mismatch(query: str, cached: str) -> str | None:
    """One prompt switches something on, the other off, in any wording: "turn on" / "switch off", "enable" /
    "turn off", "disable" / "switch on". The antonym guard cannot see these: "turn on Bluetooth on a Mac" has
    "on" on both sides, and the verifier and the judge take the two for one question."""
    query_way, cached_way = _switched(query), _switched(cached)
    if len(query_way) == 1 and len(cached_way) == 1 and query_way != cached_way:
        return f"opposite:switch {next(iter(query_way))}/{next(iter(cached_way))}"
    return None


QUESTION_WORDS = frozenset({"when", "where", "why", "who"})
"""Question words that each ask for a different kind of answer (a time, a place, a reason, a person), and
one more kind: an amount ("how long", "how many", "how much", ...: all one kind, as paraphrases trade them:
"How long does it take?" / "How much time does it take?"). "how", "what" and "which" alone are left out:
paraphrases trade them freely ("How far is the Moon?" / "What is the distance to the Moon?")."""
_AMOUNT = re.compile(r"\bhow (?:long|many|much|often|far|old|big|tall|large|heavy|fast)\b", re.IGNORECASE)


def _question_words(text: str) -> frozenset[str]:
    """QUESTION_WORDS in the text, contractions included ("where's" asks where), and "how-much" for an
    amount."""
    found = frozenset(re.split(r"['’]", word.lower())[0] for word in _words(text)) & QUESTION_WORDS
    return found | {"how-much"} if _AMOUNT.search(text) else found


def question_word_mismatch(query: str, cached: str) -> str | None:
    """Both prompts ask with a question word of QUESTION_WORDS and share none: "When do cherry trees bloom?"
    is not answered by "Where can I see cherry blossoms?". One side without any is no mismatch ("When did
    the war end?" / "In what year did the war end?")."""
    query_words, cached_words = _question_words(query), _question_words(cached)
    if query_words and cached_words and not query_words & cached_words:
        return f"question:{'/'.join(sorted(query_words))}/{'/'.join(sorted(cached_words))}"
    return None


def entity_mismatch(query: str, cached: str) -> str | None:
    """Every name on either side must appear (case-insensitively) on the other."""
    for source, other in ((query, cached), (cached, query)):
        for entity in entities(source):
            if not _contains(other, entity):
                return f"entity:{entity}"
    return None


def unmatched_entities(query: str, cached: str) -> int:
    """How many names of either side are missing from the other (the entity guard stops at the first)."""
    return sum(not _contains(other, entity)
               for source, other in ((query, cached), (cached, query)) for entity in entities(source))


def direction_mismatch(query: str, cached: str) -> str | None:
    """"X to Y" in one prompt and "Y to X" in the other: a conversion, translation or trip turned around
    ("Los Angeles to Tokyo", "a Roth IRA to a traditional IRA"; cosine ~0.998)."""
    query_pairs = {(a.lower(), b.lower()) for a, b in _DIRECTION.findall(query)}
    cached_pairs = {(a.lower(), b.lower()) for a, b in _DIRECTION.findall(cached)}
    reversed_pairs = {(b, a) for a, b in cached_pairs if a != b}
    return "direction" if query_pairs & reversed_pairs or _swapped_around_to(query, cached) else None


def _swapped_around_to(query: str, cached: str) -> bool:
    """The same content words, but some cross a "to"/"into" one way and others the other way."""
    if set(content_words(query)) != set(content_words(cached)):
        return False
    for query_left, query_right in _around_toward(query):
        for cached_left, cached_right in _around_toward(cached):
            moved_right = (query_left & cached_right) - (query_right | cached_left)
            moved_left = (query_right & cached_left) - (query_left | cached_right)
            if moved_right and moved_left:
                return True
    return False


def _around_toward(text: str) -> list[tuple[frozenset[str], frozenset[str]]]:
    """The content words before and after each "to"/"into"."""
    return [(frozenset(content_words(text[: m.start()])), frozenset(content_words(text[m.end() :])))
            for m in _TOWARD.finditer(text)]


@lru_cache(maxsize=4096)
def content_words(text: str) -> tuple[str, ...]:
    """The stems of the words that carry meaning, in order."""
    lowered = (word.lower().replace("’", "'") for word in _words(text))
    return tuple(stem(word) for word in lowered if word not in FUNCTION_WORDS and not word.endswith("n't"))


def substitution_mismatch(query: str, cached: str) -> str | None:
    """The same sentence with one content word swapped ("area"/"circumference" of a circle,
    "tuple"/"set"): the swapped word is what the question is about. `veto` applies it only below
    SYNONYM_SIMILARITY, where the encoder does not see the swap as a synonym."""
    query_words, cached_words = content_words(query), content_words(cached)
    opcodes = difflib.SequenceMatcher(a=query_words, b=cached_words, autojunk=False).get_opcodes()
    changes = [op for op in opcodes if op[0] != "equal"]
    swaps = [op for op in changes if op[0] == "replace" and op[2] - op[1] == 1 and op[4] - op[3] == 1]
    unchanged = sum(i2 - i1 for tag, i1, i2, _, _ in opcodes if tag == "equal")
    changed = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in changes)
    if len(changes) <= 2 and swaps and unchanged >= max(changed, 1):
        _, i1, _, j1, _ = swaps[0]
        return f"substitution:{query_words[i1]}/{cached_words[j1]}"
    return None


def intent(text: str) -> str:
    """A coarse question type: asking for a cause, a yes/no question, or anything else."""
    words = [word.lower() for word in _words(text)]
    if "why" in words or _CAUSE.search(" ".join(words)):
        return "cause"
    if words and words[0] in AUXILIARIES and not (len(words) > 1 and words[1] == "you"):
        return "yes-no"  # "Is it bad to …?", not "Can you explain …?"
    return "other"


def intent_mismatch(query: str, cached: str) -> str | None:
    """"How do I get rid of X" is not answered by "Why do I have X", nor by "Is X bad?"."""
    query_intent, cached_intent = intent(query), intent(cached)
    return f"intent:{query_intent}/{cached_intent}" if query_intent != cached_intent else None


Check = Callable[[str, str], str | None]
"""A guard: (query, cached prompt) -> the mismatch it names, or None."""


@dataclass(frozen=True)
class Guard:
    """One check and how much its word counts. A hard guard is almost never wrong, so its reason vetoes by
    itself; a soft one also vetoes many true paraphrases ("HTTP 404" / "404", "brief" / "short"), so the
    verifier weighs what it says with the other evidence instead of obeying it."""

    check: Check
    hard: bool


GUARDS: tuple[Guard, ...] = (
    Guard(number_mismatch, hard=True),
    Guard(negation_mismatch, hard=True),
    Guard(antonym_mismatch, hard=True),
    Guard(direction_mismatch, hard=True),
    Guard(prefix_mismatch, hard=True),
    Guard(particle_mismatch, hard=True),
    Guard(toggle_mismatch, hard=True),
    Guard(question_word_mismatch, hard=True),
    Guard(entity_mismatch, hard=False),
    Guard(substitution_mismatch, hard=False),
    Guard(intent_mismatch, hard=False),
)
"""Every guard, in the order they are asked. The soft ones' order is the order of their features in the
verifier (verifier.SOFT_FEATURES), which its fitted weights depend on."""

HARD: tuple[Check, ...] = tuple(guard.check for guard in GUARDS if guard.hard)
SOFT: tuple[Check, ...] = tuple(guard.check for guard in GUARDS if not guard.hard)


def hard_veto(query: str, cached: str) -> str | None:
    """The first hard guard's reason, or None."""
    return next((reason for check in HARD if (reason := check(query, cached)) is not None), None)


def soft_signals(query: str, cached: str) -> tuple[str | None, ...]:
    """What each soft guard says (its reason, or None), in SOFT order."""
    return tuple(check(query, cached) for check in SOFT)


SYNONYM_SIMILARITY = 0.93
"""Above this cosine similarity a one-word swap is the encoder recognising a synonym (tall/height,
say/translate); below it, the swap tends to be a different question (tuple/set, flu/cold)."""


def veto(query: str, cached: str, similarity: float | None = None) -> str | None:
    """The first reason the cached prompt must not answer the query with every guard taken as absolute (the
    guards alone, without the verifier's model), or None if all pass. `similarity` (cosine of the two
    prompts' embeddings) tunes the substitution guard: above SYNONYM_SIMILARITY it is not asked."""
    for guard in GUARDS:
        if guard.check is substitution_mismatch and similarity is not None and similarity >= SYNONYM_SIMILARITY:
            continue
        if (reason := guard.check(query, cached)) is not None:
            return reason
    return None
