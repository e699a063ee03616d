"""turnout.yaml: one validated config object, loaded once at start and passed down.

Loading is three steps, each with errors that name the offending key:
YAML → `${ENV}` / `${ENV:-default}` interpolation of string values → pydantic validation.
Only the caller (the CLI) decides which file to read; this module never looks at the environment
except through the `environ` mapping it is handed for interpolation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from engine.speculative import SpeculativeConfig
from engine.types import DEFAULT_PREFIX_CACHE_MB, DEFAULT_WEIGHTS, WeightFormat
from gateway.cache.config import CacheConfig
from gateway.types import Tier
from router_models.conversation import TurnsMode

TIERS: tuple[Tier, ...] = ("small", "large")


class ConfigError(Exception):
    """An invalid config; `errors` holds one `key.path: message` line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"invalid config {source}:\n" + "\n".join(f"  {line}" for line in errors))


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class HealthCheckConfig(_Strict):
    """Background probe of a remote (kind openai) deployment; an unhealthy one gets no traffic while a
    healthy replica is left. `path` resolves against `url` like a link: `models` → <url>/models,
    `/health` → the server root's /health (vLLM), `/ready` for another turnout."""

    path: str = "models"
    interval_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)


class UpstreamMetricsConfig(_Strict):
    """The deployment server's own Prometheus metrics (vLLM's `/metrics`), scraped in the background and
    shown beside the gateway's (`turnout_upstream_*`, the dashboard); `balance: least-queue` reads its
    queue depth. `url`: `auto` (kind openai: `<url without /v1>/metrics`; other kinds: off), `off`, or the
    full URL. In YAML `metrics: off`, `metrics: auto` and `metrics: <URL>` are shorthands for `url`."""

    url: str = "auto"
    interval_s: float = Field(5.0, gt=0, description="seconds between scrapes")
    timeout_s: float = Field(1.0, gt=0, description="a scrape slower than this marks the metrics stale")

    @field_validator("url")
    @classmethod
    def _auto_off_or_http(cls, url: str) -> str:
        if url not in ("auto", "off") and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"expected auto, off or an http(s):// URL, got {url!r}")
        return url


class BreakerConfig(_Strict):
    """Per-deployment circuit breaker: `failures` consecutive failed requests open it; after
    `cooldown_s` one request probes it (half-open) and its outcome closes or reopens it."""

    failures: int = Field(5, ge=1)
    cooldown_s: float = Field(10.0, gt=0)


class DeploymentConfig(_Strict):
    """One place a tier's model is served. `model` is both the public model id and the name sent
    upstream (for litellm, the provider-prefixed name such as `openai/gpt-4o-mini`)."""

    kind: Literal["embedded", "openai", "litellm"] = "embedded"
    model: str
    url: str | None = Field(None, validate_default=True)
    api_key: str | None = None
    timeout_s: float = Field(120.0, gt=0, description="read timeout between streamed bytes")
    connect_timeout_s: float = Field(5.0, gt=0)
    first_byte_timeout_s: float | None = Field(None, gt=0, description="default: timeout_s")
    max_connections: int = Field(100, ge=1)
    max_batch_size: int = Field(8, ge=1)
    max_waiting: int = Field(64, ge=0)
    context_length: int | None = Field(None, ge=1)
    prefix_cache_mb: float = Field(DEFAULT_PREFIX_CACHE_MB, ge=0, description="embedded: memory for reusable "
                                   "prompt KV per model (the target's, and as much for a draft model's); 0: off")
    threads: int | None = Field(None, ge=1, description="embedded: torch threads per step; default: the "
                                "process's cores, shared among the engines with work")
    weights: WeightFormat = Field(DEFAULT_WEIGHTS, description="embedded: the weight format the engine "
                                  "computes on (fp32, or int8: converted once in the model store, a quarter "
                                  "of the memory, about twice the one-stream speed, -1.8 HumanEval points; "
                                  "BENCHMARKS.md)")
    cache_salt: bool = Field(False, description="openai kind: send each request's tenant as vLLM's cache_salt "
                             "(vLLM >= 0.9, or turnout's engine server), so the server's prefix cache is not "
                             "shared across tenants")
    speculative: SpeculativeConfig = Field(
        default_factory=SpeculativeConfig, description="the engine's own config (engine/speculative.py), validated "
        "as it is; for remote deployments it documents how the server itself was started (vLLM's "
        "speculative-config, `turnout vllm-args`)")
    name: str | None = Field(None, description="id in x-turnout-deployment and /ready; default <tier>-<n>")
    health: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    metrics: UpstreamMetricsConfig = Field(default_factory=UpstreamMetricsConfig)
    extra_args: list[str] = Field(default_factory=list,
                                  description="more `vllm serve` flags (turnout vllm-args), e.g. "
                                              "--tensor-parallel-size=2; the gateway ignores them")

    @field_validator("url")
    @classmethod
    def _url_matches_kind(cls, url: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "openai" and not url:
            raise ValueError("field required for kind openai (the server's base URL, e.g. http://host:8000/v1)")
        if kind == "embedded" and url:
            raise ValueError("kind embedded runs in-process and takes no url")
        return url

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics_shorthand(cls, value: object) -> object:
        """`metrics: off` (YAML reads a bare off/on as a boolean), `metrics: auto`, `metrics: <URL>`."""
        if isinstance(value, bool):
            return {"url": "auto" if value else "off"}
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _metrics_need_a_server(self) -> DeploymentConfig:
        if self.kind == "embedded" and self.metrics.url not in ("auto", "off"):
            raise ValueError("metrics: kind embedded runs in-process; its numbers are the gateway's own /metrics")
        return self

    @model_validator(mode="after")
    def _weights_are_the_engines(self) -> DeploymentConfig:
        if self.kind != "embedded" and self.weights != DEFAULT_WEIGHTS:
            raise ValueError(f"weights: the embedded engine's format; a {self.kind} server loads its own weights "
                             "(vLLM: --quantization / --dtype, passed through extra_args)")
        return self

    @property
    def metrics_url(self) -> str | None:
        """Where the server's own metrics are scraped; None: not scraped."""
        url = self.metrics.url
        if url == "off":
            return None
        if url != "auto":
            return url
        if self.kind != "openai" or self.url is None:
            return None
        return self.url.rstrip("/").removesuffix("/v1") + "/metrics"

    @model_validator(mode="after")
    def _cache_salt_needs_a_server(self) -> DeploymentConfig:
        if self.cache_salt and self.kind != "openai":
            raise ValueError("cache_salt is sent to an OpenAI-compatible server (kind openai); the embedded engine "
                             "always keeps tenants' prefix caches apart")
        return self


    @model_validator(mode="after")
    def _engine_can_speculate(self) -> DeploymentConfig:
        if self.kind == "embedded" and self.speculative.method == "eagle3":
            raise ValueError("speculative.method eagle3 runs in vLLM only; the embedded engine supports "
                             "ngram and draft_model")
        return self


Balance = Literal["least-outstanding", "least-queue"]


class TierConfig(_Strict):
    deployments: list[DeploymentConfig] = Field(min_length=1)
    balance: Balance = Field(
        "least-outstanding", description="how a replica is chosen: least-outstanding (fewest requests this "
        "gateway has in flight there); least-queue (fewest running + waiting in the server's own metrics, plus "
        "what this gateway sent since the last scrape; least-outstanding while any candidate's are stale)")

    @model_validator(mode="after")
    def _queue_needs_metrics(self) -> TierConfig:
        if self.balance == "least-queue" and not any(d.metrics_url for d in self.deployments):
            raise ValueError("balance least-queue reads the servers' own metrics: give at least one deployment "
                             "metrics (kind openai with metrics auto or a URL); the embedded engine exports none")
        return self


class RuleCondition(_Strict):
    """All given conditions must hold for the rule to match."""

    regex: str | None = None
    keywords: list[str] | None = None
    api_keys: list[str] | None = None
    min_prompt_tokens: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _not_empty(self) -> RuleCondition:
        if self.regex is None and not self.keywords and not self.api_keys and self.min_prompt_tokens is None:
            raise ValueError("a rule needs at least one of regex, keywords, api_keys, min_prompt_tokens")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self


class RuleConfig(_Strict):
    name: str
    tier: Tier
    when: RuleCondition


class RetryConfig(_Strict):
    """Retries before the first byte: each attempt goes to another replica of the tier, after a
    jittered exponential backoff (`backoff_s`, doubling, at most `max_backoff_s`)."""

    attempts: int = Field(3, ge=1, description="replicas tried per tier")
    backoff_s: float = Field(0.05, ge=0)
    max_backoff_s: float = Field(1.0, ge=0)


class CascadeConfig(_Strict):
    """The small tier answers first; an answer it is unsure of is dropped and the large tier serves the
    request instead (FrugalGPT / AutoMix style). The router decides from the prompt alone; the small
    model's own token probabilities over its answer are evidence the prompt cannot give."""

    confidence: float = Field(gt=0.0, lt=1.0, description="escalate when the small answer's geometric-mean "
                              "token probability (exp of its mean token logprob) is below this")
    head_tokens: int = Field(32, ge=1, le=4096, description="a streamed answer is judged on its first "
                             "head_tokens tokens, held back until then; a non-streamed one in full")


class ShadowConfig(_Strict):
    """Shadow labelling: a sampled share of live requests is answered by the other tier too, in the
    background, and a judge says which answer was better; the outcomes are the deployment's own training
    data for `turnout router train --data` (the RouteLLM / Arch-Router lesson: fit the router to your
    traffic). Off the client's path: its reply is sent and cached before the shadow work begins."""

    fraction: float = Field(gt=0.0, le=1.0, description="share of requests answered by both tiers")
    judge: str = Field("large", description="a tier or a configured model id that compares the two answers")
    sink: Literal["redis"] | Path = Field(
        description="where outcomes go, in the shape `turnout router train --data` reads: a directory of JSONL "
        "files, one per tenant (`<tenant>.jsonl`; a directory called redis is `./redis`), or `redis`: one capped "
        "Redis Stream per tenant in the gateway's Redis (auth.redis_url, else the cache's), read by "
        "`--data redis://HOST:PORT/DB?tenant=T`")
    stream_maxlen: int = Field(100_000, ge=1, description="sink redis: records kept per tenant; older ones are "
                               "trimmed (approximately: XADD MAXLEN ~)")
    queue: int = Field(32, ge=1, le=10_000, description="requests waiting for their shadow; more are dropped")
    max_tokens: int = Field(512, ge=1, description="cap on each shadow answer")

    @model_validator(mode="after")
    def _maxlen_needs_a_stream(self) -> ShadowConfig:
        if "stream_maxlen" in self.model_fields_set and self.sink != "redis":
            raise ValueError("stream_maxlen caps the redis sink's streams; this sink is a directory")
        return self


class RoutingConfig(_Strict):
    """`router`: a router_models name (default, length, random) or a path to trained weights;
    `none` sends every `auto` request to the small tier. A score >= `threshold` goes large;
    `strong_fraction` instead asks the router for the threshold sending that share of traffic large."""

    router: str = "default"
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    strong_fraction: float | None = Field(None, ge=0.0, le=1.0)
    turns: TurnsMode = Field(
        "conversation", description="conversation: a chat scores as its hardest user turn (the first and the "
        "last 7), so a follow-up keeps the tier of the question it follows and the KV that tier already holds; "
        "last: the last user turn alone")
    rules: list[RuleConfig] = Field(default_factory=list)
    fallback: bool = Field(True, description="serve from the other tier when every replica of the chosen "
                                             "one fails before the first byte")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    cascade: CascadeConfig | None = Field(None, description="let the small tier answer the requests the router "
                                          "(or routing off) sends it first, escalating doubtful answers")
    shadow: ShadowConfig | None = None

    @model_validator(mode="after")
    def _one_cutoff(self) -> RoutingConfig:
        if self.threshold is not None and self.strong_fraction is not None:
            raise ValueError("give threshold or strong_fraction, not both")
        return self


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    request_timeout_s: float = Field(600.0, gt=0, description="whole request, first byte to last")
    max_request_bytes: int = Field(8 * 2**20, ge=1024, description="larger request bodies get 413")


class KeyLimits(_Strict):
    """Per-key quotas per limits window; None means unlimited."""

    requests: int | None = Field(None, ge=0, description="requests per window")
    tokens: int | None = Field(None, ge=0, description="prompt + completion tokens per window")


class LimitsConfig(KeyLimits):
    """Defaults for every key (a key's own `limits` override them), counted in Redis in fixed windows
    so that every gateway replica sees the same counts. Enforced only when auth is on."""

    window_s: float = Field(60.0, gt=0, description="window length: 60 makes the quotas per minute")


class ApiKeyConfig(_Strict):
    """One API key. Only the sha256 of the secret is stored: `turnout keys create` prints this entry."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = ""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the secret")
    prefix: str = Field("", description="the secret's first characters, to recognise it in listings")
    tenant: str | None = Field(None, description="cache namespace shared by the tenant's keys; default: id")
    tiers: list[Tier] | None = Field(None, description="tiers the key may use; None: all")
    limits: KeyLimits | None = None
    admin: bool = Field(False, description="sees every key's usage")
    revoked: bool = False
    created: str | None = Field(None, description="when the key was made (informational)")


class AuthConfig(_Strict):
    """API keys. Off: any bearer token is accepted and only separates cache namespaces."""

    enabled: bool = False
    keys_from: Literal["config", "redis"] = "config"
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    redis_url: str | None = Field(None, description="keys, limits and usage; None: the cache's Redis")

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[ApiKeyConfig]) -> list[ApiKeyConfig]:
        for attribute in ("id", "sha256"):
            values = [getattr(key, attribute) for key in keys]
            if len(values) != len(set(values)):
                raise ValueError(f"two keys share one {attribute}")
        return keys


class ModelPrice(_Strict):
    input_per_1m: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_1m: float = Field(ge=0, description="USD per million completion tokens")


class PricingConfig(_Strict):
    """Per-model prices for cost estimates. Savings compare with sending every request to
    `baseline_model` (default: the large tier's first model), which may be any priced model."""

    models: dict[str, ModelPrice] = Field(default_factory=dict)
    baseline_model: str | None = None


class DashboardConfig(_Strict):
    bucket_s: float = Field(60.0, gt=0, description="width of one point of the /dashboard charts")
    buckets: int = Field(60, ge=2, description="points kept (a ring buffer in memory)")


class TurnoutConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    tiers: dict[Tier, TierConfig]
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    cache: CacheConfig | None = None  # absent: no cache step
    models_aliases: dict[str, str] = Field(default_factory=dict)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @field_validator("tiers")
    @classmethod
    def _some_tier(cls, tiers: dict[Tier, TierConfig]) -> dict[Tier, TierConfig]:
        if not tiers:
            raise ValueError("needs at least one of small, large")
        return tiers

    @field_validator("models_aliases")
    @classmethod
    def _aliases_resolve(cls, aliases: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        tiers: dict[Tier, TierConfig] = info.data.get("tiers") or {}
        known = {"auto", *TIERS, *(d.model for tier in tiers.values() for d in tier.deployments)}
        for alias, target in aliases.items():
            if target not in known:
                raise ValueError(f"{alias}: {target!r} is not auto, a tier or a configured model id")
        return aliases

    @model_validator(mode="after")
    def _state_has_a_redis(self) -> TurnoutConfig:
        """Keys in Redis, quotas and the redis shadow sink need a Redis: auth.redis_url, or the cache's."""
        if self.state_redis_configured:
            return self
        if self.auth.enabled and self.auth.keys_from == "redis":
            raise ValueError("auth.keys_from redis needs auth.redis_url or an enabled cache (its Redis)")
        quotas = [self.limits, *(key.limits for key in self.auth.keys if key.limits)]
        if self.auth.enabled and any(q.requests is not None or q.tokens is not None for q in quotas):
            raise ValueError("limits are counted in Redis: set auth.redis_url or enable the cache")
        if self.routing.shadow is not None and self.routing.shadow.sink == "redis":
            raise ValueError("routing.shadow.sink redis needs auth.redis_url or an enabled cache (its Redis)")
        return self

    @model_validator(mode="after")
    def _judge_tier_exists(self) -> TurnoutConfig:
        cache = self.cache
        if cache and cache.judge_tier and "judge_tier" in cache.model_fields_set and cache.judge_tier not in self.tiers:
            raise ValueError(f"cache.judge_tier: no tier {cache.judge_tier!r} is configured")
        return self

    @property
    def state_redis_configured(self) -> bool:
        """Whether keys, limits and usage have a Redis (their own, or the cache's)."""
        return self.auth.redis_url is not None or (self.cache is not None and self.cache.enabled)

    def deployments(self) -> list[tuple[Tier, DeploymentConfig]]:
        return [(tier, d) for tier, cfg in self.tiers.items() for d in cfg.deployments]

    def baseline_model(self) -> str | None:
        """The model savings are measured against: pricing.baseline_model, else the large tier's first."""
        if self.pricing.baseline_model is not None:
            return self.pricing.baseline_model
        large = self.tiers.get("large")
        return large.deployments[0].model if large else None


# --- loading -----------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(node: Any, environ: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace `${NAME}` / `${NAME:-default}` in every string value; returns (tree, errors)."""
    errors: list[str] = []
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out[key], errs = interpolate(value, environ, _join(path, str(key)))
            errors += errs
        return out, errors
    if isinstance(node, list):
        items = []
        for index, value in enumerate(node):
            item, errs = interpolate(value, environ, f"{path}[{index}]")
            items.append(item)
            errors += errs
        return items, errors
    if not isinstance(node, str):
        return node, errors

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        errors.append(f"{path or '<root>'}: environment variable {name} is not set")
        return ""

    return _ENV_REF.sub(substitute, node), errors


def parse_config(text: str, source: str = "<string>",
                 environ: Mapping[str, str] | None = None) -> TurnoutConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["<root>: expected a mapping of keys (server, tiers, routing, …)"])
    raw, errors = interpolate(raw, environ or {})
    if errors:
        raise ConfigError(source, errors)
    try:
        return TurnoutConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_errors(exc)) from None


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> TurnoutConfig:
    """Read `path`, or the embedded default config when `path` is None."""
    if path is None:
        text = resources.files("gateway").joinpath("default.yaml").read_text()
        return parse_config(text, "gateway/default.yaml (built-in)", environ)
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    return parse_config(text, str(path), environ)


def format_validation_errors(exc: ValidationError) -> list[str]:
    """pydantic errors as `tiers.large.deployments[0].url: Field required`."""
    lines = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # models; dataclasses (speculative)
            message = "unknown key"
        lines.append(f"{path or '<root>'}: {message}")
    return lines


def summarize(config: TurnoutConfig) -> str:
    """A few human lines for `turnout config check` and the startup log."""
    lines = [f"server: {config.server.host}:{config.server.port}"]
    for tier, deployment in config.deployments():
        where = deployment.url or ("in-process" if deployment.kind == "embedded" else "provider default URL")
        spec = f", speculative {deployment.speculative.method}" if deployment.speculative.enabled else ""
        scraped = f", metrics {deployment.metrics_url}" if deployment.metrics_url else ""
        lines.append(f"{tier}: {deployment.model} ({deployment.kind}, {where}{spec}{scraped})")
    lines += [f"{tier}: balance {cfg.balance}" for tier, cfg in config.tiers.items()
              if cfg.balance != "least-outstanding"]
    routing = config.routing
    cutoff = (f"strong_fraction {routing.strong_fraction}" if routing.strong_fraction is not None
              else f"threshold {routing.threshold if routing.threshold is not None else 'router default'}")
    lines.append(f"routing: router {routing.router}, {cutoff}, {len(routing.rules)} rule(s)")
    cache = config.cache
    if cache is None or not cache.enabled:
        lines.append("cache: off")
    else:
        semantic = "on" if cache.semantic_enabled else "off"
        lines.append(f"cache: {cache.redis_url or 'embedded redis'}, semantic {semantic}")
    if config.models_aliases:
        lines.append("aliases: " + ", ".join(f"{a} -> {t}" for a, t in config.models_aliases.items()))
    lines.append(_auth_summary(config))
    return "\n".join(lines)


def _auth_summary(config: TurnoutConfig) -> str:
    auth, limits = config.auth, config.limits
    if not auth.enabled:
        return "auth: off (any bearer token; it only separates cache namespaces)"
    where = f"{len(auth.keys)} in config" if auth.keys_from == "config" else "in redis"
    quotas = ", ".join(f"{value} {name}" for name, value in (("requests", limits.requests), ("tokens", limits.tokens))
                       if value is not None) or "none by default"
    return f"auth: keys {where}; quotas per {limits.window_s:g}s window: {quotas}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
