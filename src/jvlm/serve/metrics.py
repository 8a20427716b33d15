"""Prometheus metrics of the server: what an operator needs to see load, latency and failures.

Each server instance owns its own ``CollectorRegistry`` rather than the process-global one,
so several servers in one process (tests, benchmarks) do not collide and ``/metrics`` shows
exactly one server. Metric names follow Prometheus conventions (``_total`` for counters,
base units: seconds, tokens).

Throughput is exported two ways: the ``jvlm_generation_tokens_total`` counter (use
``rate()`` in PromQL; this is the exact figure) and a ``jvlm_generation_tokens_per_second``
gauge smoothed over recent engine steps, for dashboards that read one number.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
#: time constant of the smoothed tokens/s gauge
_THROUGHPUT_WINDOW_S = 5.0


class ServerMetrics:
    """All counters, gauges and histograms of one server, plus the text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("jvlm_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=r)
        self.errors = Counter("jvlm_errors", "Error responses (and in-stream errors), by OpenAI error code",
                              ["code"], registry=r)
        self.completions = Counter("jvlm_completions", "Generations that reached the engine, by how they ended",
                                   ["finish_reason"], registry=r)
        self.engine_failures = Counter(
            "jvlm_engine_failures", "Faults inside the engine: 'request' failed one request only, 'batch' "
            "failed every request in flight and rebuilt the engine", ["scope"], registry=r)
        self.cancelled = Counter("jvlm_cancelled_requests",
                                 "Generations stopped because the client went away", registry=r)
        self.queue_depth = Gauge("jvlm_queue_depth", "Requests admitted and waiting for a batch slot", registry=r)
        self.running = Gauge("jvlm_running_requests", "Requests currently being generated", registry=r)
        self.batch_size = Histogram("jvlm_batch_size", "Requests advanced together by one engine step",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.prompt_tokens = Counter("jvlm_prompt_tokens", "Prompt tokens processed (image tokens included)",
                                     registry=r)
        self.image_tokens = Counter("jvlm_image_tokens", "Image tokens among the prompt tokens", registry=r)
        self.generation_tokens = Counter("jvlm_generation_tokens", "Tokens generated", registry=r)
        self.tokens_per_s = Gauge("jvlm_generation_tokens_per_second",
                                  f"Generated tokens per second, smoothed over ~{_THROUGHPUT_WINDOW_S:g} s",
                                  registry=r)
        self.ttft = Histogram("jvlm_time_to_first_token_seconds", "From request arrival to its first token",
                              buckets=_LATENCY_BUCKETS_S, registry=r)
        self.latency = Histogram("jvlm_request_duration_seconds", "From request arrival to its last token",
                                 buckets=_LATENCY_BUCKETS_S, registry=r)
        self.images = Counter("jvlm_images", "Images received in requests", registry=r)
        self.model_ready = Gauge("jvlm_model_ready", "1 once the model is loaded and serving", registry=r)
        self.decode_path = Info("jvlm_decode", "How the model computes: compute dtype and why, decoder weight "
                                "format, linear and attention kernels, CPU", registry=r)
        self._rate_lock = threading.Lock()
        self._rate_t = time.monotonic()
        self._rate = 0.0

    # ------------------------------------------------------------------ updates
    def observe_step(self, batch_size: int, new_tokens: int) -> None:
        """One engine step advanced ``batch_size`` requests and produced ``new_tokens`` tokens."""
        if batch_size > 0:
            self.batch_size.observe(batch_size)
        if new_tokens:
            self.generation_tokens.inc(new_tokens)
        with self._rate_lock:  # exponential moving average of the instantaneous rate
            now = time.monotonic()
            dt = max(now - self._rate_t, 1e-6)
            self._rate_t = now
            weight = min(dt / _THROUGHPUT_WINDOW_S, 1.0)
            self._rate += weight * (new_tokens / dt - self._rate)
            self.tokens_per_s.set(self._rate)

    def observe_idle(self) -> None:
        """The engine has nothing to do: throughput is zero from now on."""
        with self._rate_lock:
            self._rate_t = time.monotonic()
            self._rate = 0.0
            self.tokens_per_s.set(0.0)

    def observe_response(self, route: str, status: int, error_code: str | None = None) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        if error_code is not None:
            self.errors.labels(code=error_code).inc()

    def set_decode_setup(self, setup) -> None:
        """The path the loaded model runs (``jvlm.inference.quantize.DecodeSetup``)."""
        self.decode_path.info({k: str(v) for k, v in setup.as_dict().items()})

    def track_image_cache(self, cache) -> None:
        """Export the hit and miss counts of the engine's image-feature cache (read at scrape time,
        because the cache counts its own lookups)."""
        self.registry.register(_ImageCacheCollector(cache))

    # ------------------------------------------------------------------ export
    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ImageCacheCollector:
    """Reads ``hits``/``misses``/``bytes_used`` of a ``FeatureCache`` when Prometheus scrapes."""

    def __init__(self, cache):
        self.cache = cache

    def describe(self):
        return []  # no fixed description: values are only known at collection time

    def collect(self):
        yield CounterMetricFamily("jvlm_image_cache_hits", "Images whose features came from the cache",
                                  value=self.cache.hits)
        yield CounterMetricFamily("jvlm_image_cache_misses", "Images that had to be encoded",
                                  value=self.cache.misses)
        yield GaugeMetricFamily("jvlm_image_cache_bytes", "Bytes held by the image-feature cache",
                                value=self.cache.bytes_used)
