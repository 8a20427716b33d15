"""The one place where generation happens: a continuous-batching loop over an explicit KV cache.

Token ids in, token ids (and their text, when a tokenizer is given) out; nothing here knows
about HTTP, argparse or chat templates. Every caller drives the same step loop:

    engine.add_request(req)          # checks the token budget at once, queues the request
    while engine.has_unfinished():
        for event in engine.step():  # one decode step for the running batch, then prefill of
            ...                      # newly admitted requests (their first token)

``generate``, ``stream`` and ``generate_many`` are that loop written out. A server worker
thread calls ``add_request``/``abort`` as requests arrive (both are thread-safe) and ``step``
in a loop; ``step`` itself must only ever be called from that one thread.

New requests are prefilled in their own cache (left-padded together, or alone after a
prefix-cache hit) and then joined to the running batch (``batch.RunningBatch``); a request
that finishes leaves it at once, so nobody waits for the longest answer.

Faults are confined to the request that causes them. A group prefill that raises is retried
one request at a time, and a request that still fails alone ends with ``finish_reason ==
"error"`` (its ``TokenEvent.error`` holds the exception) while the others go on; so does a
row whose sampling raises. Only what cannot be pinned on one row -- the batched decode
forward pass, or running out of memory -- propagates out of ``step``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from jvlm.errors import JVLMError, PromptError
from jvlm.inference.batch import RunningBatch
from jvlm.inference.detok import IncrementalDetokenizer, StopStringMatcher, make_decoder
from jvlm.inference.feature_cache import (
    CachedImage,
    FeatureCache,
    PrefixCache,
    prefix_key,
)
from jvlm.inference.request import Request, Result, TokenEvent, check_budget
from jvlm.inference.sampling import sample_rows
from jvlm.model.text import KVCache

log = logging.getLogger(__name__)


@dataclass
class _Sequence:
    """Book-keeping of one request while it is in the engine."""

    request: Request
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    detok: IncrementalDetokenizer | None
    matcher: StopStringMatcher
    t_added: float
    t_first: float = 0.0
    token_ids: list[int] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return self.request.params.max_new_tokens - len(self.token_ids)


def _is_resource_fault(exc: BaseException) -> bool:
    """Out of memory is the whole engine's problem (it passes when the load drops), not a row's."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class Engine:
    """Generation for one model. See the module docstring for the step loop.

    ``tokenizer`` (anything with ``decode(ids, skip_special_tokens=...)``, e.g. the processor)
    enables text in events and stop strings; without it the engine is ids-only. Every row
    decodes at every step, so a fast tokenizer inside it is called directly (``make_decoder``).
    ``banned_token_ids`` default to the model's structural image ids, which only the
    processor may place; ``stop_token_ids`` default to the model's end-of-turn ids.
    """

    def __init__(self, model, tokenizer=None, *, max_batch_size: int = 8,
                 feature_cache: FeatureCache | None = None, prefix_cache: PrefixCache | None = None,
                 banned_token_ids: Iterable[int] | None = None, stop_token_ids: Iterable[int] | None = None,
                 context_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        # One decoder for all requests: straight to the Rust tokenizer when that is exact.
        self._decode = make_decoder(tokenizer) if tokenizer is not None else None
        self.max_batch_size = int(max_batch_size)
        self.feature_cache = feature_cache
        self.prefix_cache = prefix_cache
        cfg = model.config
        self.context_length = int(context_length or cfg.text.max_sequence_length)
        banned = getattr(model, "structural_token_ids", []) if banned_token_ids is None else banned_token_ids
        self._banned = torch.tensor(sorted(set(banned)), dtype=torch.long, device=model.device)
        stops = getattr(model, "stop_token_ids", None) if stop_token_ids is None else stop_token_ids
        if stops is None:
            stops = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
        self.stop_token_ids = frozenset(int(i) for i in stops if i is not None)
        # Positions are read from the prompt: the first structural token id marks images.
        self._structural = frozenset(int(i) for i in getattr(model, "structural_token_ids", []))
        self._pad_id = int(cfg.pad_token_id if cfg.pad_token_id is not None else 0)
        self._vocab_size = int(cfg.text.total_rows)  # ids past this have no embedding row
        # The compute dtype; not model.dtype, which is the LM head's and may be int8.
        self._dtype = model.model.language_model.ln_f.weight.dtype

        self._lock = threading.Lock()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._aborted: set[str] = set()
        self._undelivered: list[TokenEvent] = []
        self._batch = RunningBatch(self._new_cache)
        self.counters = collections.Counter()

    # ------------------------------------------------------------------ queue
    def add_request(self, request: Request) -> str:
        """Check the token budget (raises ``ContextLengthError``, before any compute), the ids
        (``PromptError`` for an id the model has no embedding for) and queue."""
        p = request.params
        check_budget(len(request.prompt_ids), request.n_image_tokens, p.max_new_tokens, self.context_length)
        self._check_ids(request)
        stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else self.stop_token_ids)
        gen = None
        if not p.greedy:
            gen = torch.Generator()
            gen.manual_seed(int(p.seed) if p.seed is not None else int(torch.randint(0, 2**62, ()).item()))
        seq = _Sequence(request=request, stop_ids=stop_ids, generator=gen,
                        detok=IncrementalDetokenizer(decode=self._decode) if self._decode is not None else None,
                        matcher=StopStringMatcher(p.stop), t_added=time.perf_counter())
        if p.stop and self.tokenizer is None:
            raise ValueError("stop strings need an engine built with a tokenizer")
        with self._lock:
            self._waiting.append(seq)
        return request.request_id

    def _check_ids(self, request: Request) -> None:
        vocab = self._vocab_size
        if not request.prompt_ids:
            raise PromptError("the prompt is empty: a request needs at least one token id")
        low, high = min(request.prompt_ids), max(request.prompt_ids)
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise PromptError(f"the prompt holds token id {bad}, outside this model's vocabulary [0, {vocab}); "
                              "build prompts with the model's own processor")

    def abort(self, request_id: str) -> None:
        """Stop a request at the next step (it ends with finish_reason "abort")."""
        with self._lock:
            self._aborted.add(request_id)

    def has_unfinished(self) -> bool:
        return bool(self._batch.rows or self._waiting or self._undelivered)

    @property
    def n_running(self) -> int:
        return len(self._batch)

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    # ------------------------------------------------------------------- loop
    def step(self) -> list[TokenEvent]:
        """Advance every running request by one token and admit waiting ones (first token)."""
        events, self._undelivered = self._undelivered, []
        return events + self._step()

    @torch.inference_mode()
    def _step(self) -> list[TokenEvent]:
        events = self._apply_aborts()
        if self._batch.rows:
            events += self._decode_step()
        if not self._waiting:  # read without the lock: a request added meanwhile waits one step
            return events
        admitted: list[_Sequence] = []
        with self._lock:
            while self._waiting and len(self._batch) + len(admitted) < self.max_batch_size:
                admitted.append(self._waiting.popleft())
        if admitted:
            events += self._admit(admitted)
        return events

    def stream(self, request: Request) -> Iterator[TokenEvent]:
        """Events of one request as they come. Drives the step loop itself: do not use while
        another thread drives this engine; other requests' events are kept for ``step``."""
        self.add_request(request)
        rid = request.request_id
        finished = False
        try:
            while not finished:
                for ev in self._step():
                    if ev.request_id != rid:
                        self._undelivered.append(ev)
                        continue
                    finished = ev.finished
                    yield ev
        finally:
            if not finished:  # the consumer stopped listening: free the batch slot
                self.abort(rid)
                self._undelivered += [ev for ev in self._step() if ev.request_id != rid]

    def generate(self, request: Request) -> Result:
        """The whole answer of one request."""
        for ev in self.stream(request):
            if ev.finished:
                return ev.result
        raise RuntimeError("the engine stopped without finishing the request")  # unreachable

    def generate_many(self, requests: list[Request]) -> list[Result]:
        """Several requests in one batch; results in the order given."""
        ids = [self.add_request(r) for r in requests]
        done: dict[str, Result] = {}
        wanted = set(ids)
        while len(done) < len(ids):
            for ev in self._step():
                if ev.request_id not in wanted:
                    self._undelivered.append(ev)
                elif ev.finished:
                    done[ev.request_id] = ev.result
        return [done[i] for i in ids]

    @torch.inference_mode()
    def next_token_logits(self, request: Request) -> torch.Tensor:
        """fp32 (vocab,) logits after the prompt, through the same caches as generation
        (used by scoring and by tests that compare cached and uncached runs)."""
        check_budget(len(request.prompt_ids), request.n_image_tokens, 0, self.context_length)
        seq = _Sequence(request, frozenset(), None, None, StopStringMatcher(()), time.perf_counter())
        logits, _, _ = self._prefill([seq])
        return logits[0].float()

    # --------------------------------------------------------------- prefill
    def _admit(self, seqs: list[_Sequence]) -> list[TokenEvent]:
        """Prefill new requests, sample their first token, join them to the running batch."""
        # A prefix-cache hit prefills only its suffix, so it cannot share a padded batch.
        groups: list[list[_Sequence]] = []
        misses = []
        for s in seqs:
            if self._prefix_entry(s) is not None:
                groups.append([s])
            else:
                misses.append(s)
        if misses:
            groups.append(misses)
        events = []
        while groups:
            group = groups.pop(0)
            try:
                logits, cache, mask = self._prefill(group)
                nxt, failed = self._sample(logits, group)
            except Exception as exc:
                if _is_resource_fault(exc):
                    raise
                if len(group) > 1:  # find the culprit: each request again on its own
                    groups[:0] = [[s] for s in group]
                    continue
                events.append(self._fail(group[0], exc))
                continue
            now = time.perf_counter()
            for s in group:
                s.t_first = now
            capacity = max(cache.length, self._batch.cache.length if self._batch.rows else 0)
            capacity += max(x.remaining for x in self._batch.rows + group)
            self._batch.join(group, cache, mask, nxt, capacity)
            events += self._after_sampling(group, nxt, failed)
        return events

    def _fail(self, seq: _Sequence, exc: Exception) -> TokenEvent:
        """The last event of a request that failed on its own (the others carry on)."""
        self.counters["request_failures"] += 1
        if isinstance(exc, JVLMError):
            log.info("request %s failed: %s", seq.request.request_id, exc)
        else:
            log.error("request %s failed inside the engine; the other requests continue",
                      seq.request.request_id, exc_info=exc)
        return TokenEvent(seq.request.request_id, None, "", "error", self._result(seq, "error"), error=exc)

    def _prefix_entry(self, seq: _Sequence):
        if self.prefix_cache is None or not seq.request.images:
            return None
        key, n = self._prefix_key(seq)
        if key is None or n >= len(seq.request.prompt_ids):
            return None
        return self.prefix_cache.peek(key)

    def _prefix_key(self, seq: _Sequence) -> tuple[str | None, int]:
        """Key and length of the prompt prefix that ends with the last image block."""
        ids = seq.request.prompt_ids
        keys = [im.cache_key for im in seq.request.images]
        if not self._structural or any(k is None for k in keys):
            return None, 0
        last = max((i for i, t in enumerate(ids) if t in self._structural), default=-1)
        if last < 0:
            return None, 0
        return prefix_key(ids[: last + 1], keys), last + 1

    def _prefill(self, group: list[_Sequence]) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        """(B, V) last-position logits, the group's KV cache and its (B, S) key mask."""
        model, dev = self.model, self.model.device
        if len(group) == 1 and self._prefix_entry(group[0]) is not None:
            return self._prefill_from_prefix(group[0])
        lengths = [len(s.request.prompt_ids) for s in group]
        b, t = len(group), max(lengths)
        ids = torch.full((b, t), self._pad_id, dtype=torch.long)
        mask = torch.zeros((b, t), dtype=torch.long)
        for i, s in enumerate(group):
            ids[i, t - lengths[i]:] = torch.tensor(s.request.prompt_ids, dtype=torch.long)
            mask[i, t - lengths[i]:] = 1
        feats, idx = self._batch_features(group, [t - n for n in lengths])
        cache = self._new_cache(b, t + max(s.remaining for s in group))
        t0 = time.perf_counter()
        out = model(ids.to(dev), attention_mask=mask.to(dev) if min(lengths) < t else None,
                    image_features=feats, image_input_idx=idx, past_key_values=cache, logits_to_keep=1)
        prefill_s = time.perf_counter() - t0
        for i, s in enumerate(group):
            s.stats["prefill_s"] = prefill_s
            s.stats["prefill_tokens"] = lengths[i]
            self._store_prefix(s, cache, row=i, start=t - lengths[i])
        return out.logits[:, -1], cache, mask.to(dev)

    def _prefill_from_prefix(self, seq: _Sequence) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        key, n = self._prefix_key(seq)
        k, v = self.prefix_cache.get(key)  # counts the hit
        ids = seq.request.prompt_ids
        cache = self._new_cache(1, len(ids) + seq.remaining)
        cache.k[:, :, :, :n] = k  # (L, 1, KV, n, D)
        cache.v[:, :, :, :n] = v
        cache.length = n
        t0 = time.perf_counter()
        suffix = torch.tensor([ids[n:]], dtype=torch.long, device=self.model.device)
        out = self.model(suffix, past_key_values=cache, logits_to_keep=1)
        seq.stats.update(prefill_s=time.perf_counter() - t0, prefill_tokens=len(ids) - n, prefix_cached_tokens=n)
        return out.logits[:, -1], cache, torch.ones((1, len(ids)), dtype=torch.long, device=self.model.device)

    def _store_prefix(self, seq: _Sequence, cache: KVCache, row: int, start: int) -> None:
        if self.prefix_cache is None or not seq.request.images:
            return
        key, n = self._prefix_key(seq)
        if key is None or key in self.prefix_cache:
            return
        self.prefix_cache.misses += 1  # lookups happen by peek; count the miss here
        # (L, 1, KV, n, D) copies: the batch cache keeps changing after this.
        k = cache.k[:, row:row + 1, :, start:start + n].clone()
        v = cache.v[:, row:row + 1, :, start:start + n].clone()
        self.prefix_cache.put(key, (k, v))

    def _batch_features(self, group: list[_Sequence], shifts: list[int]):
        """Per-row image features (B, T, K, H) and positions (B, T, K), T = most crops in a row."""
        per_row = []
        for s in group:
            feats = [self._image_features(im, s) for im in s.request.images]
            idx = [torch.as_tensor(im.image_input_idx, dtype=torch.long) for im in s.request.images]
            per_row.append((feats, idx))
        if not any(f for f, _ in per_row):
            return None, None
        first = next(f[0] for f, _ in per_row if f)
        t = max(sum(x.shape[0] for x in f) for f, _ in per_row)
        k, h = first.shape[1], first.shape[2]
        feats = first.new_zeros((len(group), t, k, h))
        idx = torch.full((len(group), t, k), -1, dtype=torch.long)
        for i, ((f, ix), shift) in enumerate(zip(per_row, shifts)):
            if not f:
                continue
            rows = torch.cat(f)  # (T_i, K, H)
            pos = torch.cat(ix)  # (T_i, K)
            feats[i, : rows.shape[0]] = rows
            idx[i, : pos.shape[0]] = torch.where(pos >= 0, pos + shift, torch.full_like(pos, -1))
        return feats, idx.to(feats.device)

    def _image_features(self, im, seq: _Sequence) -> torch.Tensor:
        """(n_crops, K, H) features: given, cached, or computed now (and cached)."""
        if im.features is not None:
            seq.stats["feature_cache_hits"] = seq.stats.get("feature_cache_hits", 0) + 1
            return im.features.to(self.model.device, self._dtype)
        cache = self.feature_cache
        if cache is not None and im.cache_key is not None:
            hit = cache.peek(im.cache_key)  # e.g. the same new image twice in one batch
            if hit is not None:
                return hit.features
        if im.crops is None:
            raise ValueError("an ImageInput needs crops or features")
        dev, dtype = self.model.device, self._dtype
        crops = torch.as_tensor(im.crops).to(dev, dtype)[None]  # (1, T, P, 588)
        masks = torch.ones(crops.shape[:3]) if im.masks is None else torch.as_tensor(im.masks)[None]  # (1, T, P)
        masks = masks.to(dev, dtype)
        t0 = time.perf_counter()
        feats = self.model.model.image_features(crops, masks)[0]  # (T, K, H)
        seq.stats["vision_s"] = seq.stats.get("vision_s", 0.0) + time.perf_counter() - t0
        self.counters["vision_calls"] += 1
        if cache is not None and im.cache_key is not None:
            cache.put(im.cache_key, CachedImage(feats, im.layout))
        return feats

    # ---------------------------------------------------------------- decode
    def _decode_step(self) -> list[TokenEvent]:
        ids, mask = self._batch.decode_inputs()
        out = self.model(ids, attention_mask=mask, past_key_values=self._batch.cache, logits_to_keep=1)
        nxt, failed = self._sample(out.logits[:, -1], self._batch.rows)
        self._batch.next_ids = nxt
        return self._after_sampling(self._batch.rows, nxt, failed)

    def _sample(self, logits: torch.Tensor, seqs: list[_Sequence]) -> tuple[torch.Tensor, dict[int, Exception]]:
        """(B,) next ids and the rows whose sampling raised (their id is a placeholder)."""
        params, gens = [s.request.params for s in seqs], [s.generator for s in seqs]
        # a failed batch draw is redone row by row: each row's generator restarts where it was,
        # so a seeded answer does not depend on another row failing
        states = [g.get_state() if isinstance(g, torch.Generator) else None for g in gens]
        try:
            return sample_rows(logits, params, gens, self._banned), {}
        except Exception as exc:
            if _is_resource_fault(exc):
                raise
        for g, state in zip(gens, states):
            if state is not None:
                g.set_state(state)
        nxt = torch.full((len(seqs),), self._pad_id, dtype=torch.long, device=logits.device)
        failed: dict[int, Exception] = {}
        for i in range(len(seqs)):  # again row by row: only the rows that raise fail
            try:
                nxt[i] = sample_rows(logits[i:i + 1], params[i:i + 1], gens[i:i + 1], self._banned)[0]
            except Exception as exc:
                if _is_resource_fault(exc):
                    raise
                failed[i] = exc
        return nxt, failed

    def _after_sampling(self, seqs: list[_Sequence], nxt: torch.Tensor,
                        failed: dict[int, Exception] | None = None) -> list[TokenEvent]:
        """Record each row's new token, emit events, drop finished (and failed) rows from the batch."""
        ids = nxt.tolist()
        events, finished = [], []
        for i, (s, tok) in enumerate(zip(seqs, ids)):
            if failed and i in failed:
                events.append(self._fail(s, failed[i]))
                finished.append(i)
                continue
            s.token_ids.append(tok)
            reason = "stop" if tok in s.stop_ids else None
            text = ""
            if s.detok is not None and reason is None:
                text, hit = s.matcher.feed(s.detok.push(tok))
                reason = "stop" if hit else None
            if reason is None and s.remaining <= 0:
                reason = "length"
            if reason is not None:
                text += self._flush(s, reason)
                finished.append(i)
            s.text_parts.append(text)
            ev = TokenEvent(s.request.request_id, tok, text, reason)
            if reason is not None:
                ev.result = self._result(s, reason)
            events.append(ev)
        if finished:  # seqs are the whole batch, or the rows just joined at its end
            offset = len(self._batch) - len(seqs)
            self._batch.drop([offset + i for i in finished])
        return events

    def _flush(self, s: _Sequence, reason: str) -> str:
        if s.detok is None or s.matcher.stopped:
            return ""
        text, _ = s.matcher.feed(s.detok.flush())
        return text + s.matcher.flush()

    def _result(self, s: _Sequence, reason: str) -> Result:
        now = time.perf_counter()
        return Result(
            request_id=s.request.request_id, token_ids=list(s.token_ids), text="".join(s.text_parts),
            finish_reason=reason, prompt_tokens=len(s.request.prompt_ids), image_tokens=s.request.n_image_tokens,
            time_to_first_token_s=s.t_first - s.t_added, total_s=now - s.t_added, stats=dict(s.stats),
        )

    # ----------------------------------------------------------- batch state
    def _new_cache(self, batch: int, capacity: int) -> KVCache:
        cache = self.model.new_cache(batch, max(capacity, 1))
        ext = self._attention_kernels()
        if ext is not None:
            from jvlm.inference.kv_attention import use_kernel_attention

            use_kernel_attention(cache, ext)
        return cache

    def _attention_kernels(self):
        """The CPU kernels, for models set up to decode with them (``quantize.py``); asked at
        every new cache so that kernels switched on after the engine was built count too."""
        if not getattr(self.model, "decode_kernels", None) or self._dtype != torch.bfloat16:
            return None
        if self.model.device.type != "cpu":
            return None
        from jvlm.inference import kernels

        return kernels.load()

    def _apply_aborts(self) -> list[TokenEvent]:
        if not self._aborted:  # the usual case; an abort arriving now is seen next step
            return []
        with self._lock:
            aborted, self._aborted = self._aborted, set()
            waiting = [s for s in self._waiting if s.request.request_id in aborted]
            for s in waiting:
                self._waiting.remove(s)
        events = [TokenEvent(s.request.request_id, None, "", "abort", self._result(s, "abort")) for s in waiting]
        rows = [i for i, s in enumerate(self._batch.rows) if s.request.request_id in aborted]
        for i in rows:
            s = self._batch.rows[i]
            events.append(TokenEvent(s.request.request_id, None, "", "abort", self._result(s, "abort")))
        if rows:
            self._batch.drop(rows)
        return events
