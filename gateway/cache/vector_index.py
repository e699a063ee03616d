"""Semantic lookup with Redis 8 vector sets: one set per (tenant, scope), queried with VSIM.

Each element is the request hash of a cached entry; its attributes hold the prompt text (for the
false-hit guards, fetched in the same VSIM round trip) and its expiry time. Expired elements are
skipped when read (checking the attribute here is cheaper than a VSIM FILTER, which parses every
visited node's JSON: bench/cache/RESULTS.md) and removed for good by a sweep inside each store: a
sorted set of (element, expiry) per scope finds them in O(log n), no scan needed. A scope that gets
no more stores expires as a whole one TTL after its last one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from gateway.cache.config import VectorQuantization
from router_models.encoder import EMBEDDING_DIM  # the shared MiniLM encoder's vectors are what it indexes

_SWEEP = """
local expired = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, element in ipairs(expired) do redis.call('VREM', KEYS[1], element) end
if #expired > 0 then redis.call('ZREM', KEYS[2], unpack(expired)) end
return #expired
"""
"""Remove up to ARGV[2] elements that expired before ARGV[1] from the vector set KEYS[1] and from its
expiry index KEYS[2]. Both keys share the tenant's hash tag, so this also runs on Redis Cluster."""

SWEEP_BATCH = 64


@dataclass(frozen=True)
class Neighbour:
    element: str
    similarity: float
    """Cosine similarity; VSIM reports (1 + cosine) / 2."""
    prompt: str


def vector_blob(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vector.shape[0] != EMBEDDING_DIM:
        raise ValueError(f"expected a {EMBEDDING_DIM}-d embedding, got {vector.shape[0]}")
    return vector.tobytes()


class VectorIndex:
    def __init__(self, quantization: VectorQuantization, candidates: int) -> None:
        self.quantization = quantization.upper()
        self.candidates = candidates

    def queue_add(
        self, pipe: Pipeline, vectors_key: str, expiries_key: str, element: str, embedding: np.ndarray,
        prompt: str, now: float, ttl_s: float,
    ) -> None:
        """Queue on `pipe` the commands that index one entry and sweep expired ones."""
        expires_at = now + ttl_s
        attributes = json.dumps({"exp": round(expires_at, 3), "p": prompt}, ensure_ascii=False)
        ttl_ms = int(ttl_s * 1000)
        # CAS: the slow neighbour search runs on a Redis worker thread, not blocking other clients' GETs
        pipe.execute_command(
            "VADD", vectors_key, "FP32", vector_blob(embedding), element, "CAS", self.quantization,
            "SETATTR", attributes)
        pipe.zadd(expiries_key, {element: expires_at})
        pipe.eval(_SWEEP, 2, vectors_key, expiries_key, now, SWEEP_BATCH)
        # an idle scope disappears entirely once its newest entry has expired
        pipe.pexpire(vectors_key, ttl_ms)
        pipe.pexpire(expiries_key, ttl_ms)

    async def search(
        self, client: Redis, vectors_key: str, embedding: np.ndarray, now: float, count: int | None = None
    ) -> list[Neighbour]:
        """Nearest live elements, most similar first."""
        reply = await client.execute_command(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            "VSIM", vectors_key, "FP32", vector_blob(embedding), "WITHSCORES", "WITHATTRIBS",
            "COUNT", count or self.candidates)
        live = [(neighbour, expires) for neighbour, expires in _parse_vsim(reply) if expires > now]
        return sorted((neighbour for neighbour, _ in live), key=lambda n: n.similarity, reverse=True)


def _parse_vsim(reply: Any) -> list[tuple[Neighbour, float]]:
    """VSIM WITHSCORES WITHATTRIBS answers a map (RESP3) or a flat element/score/attributes list (RESP2)."""
    if isinstance(reply, dict):
        triples = [(element, *values) for element, values in reply.items()]
    else:
        items = iter(reply or [])
        triples = list(zip(items, items, items, strict=True))
    neighbours = []
    for element, score, attributes in triples:
        fields = json.loads(attributes) if attributes else {}
        name = element.decode() if isinstance(element, bytes) else str(element)
        neighbour = Neighbour(element=name, similarity=2.0 * float(score) - 1.0, prompt=fields.get("p", ""))
        neighbours.append((neighbour, float(fields.get("exp", 0.0))))
    return neighbours
