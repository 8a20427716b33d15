"""The training loop: one optimiser step = one global batch, drawn by the mixing sampler.

Every process draws the same global list of rows (the sampler is deterministic and its
state identical everywhere) and encodes only its own slice: micro-batch ``m`` of the step
holds samples ``[m * micro, (m + 1) * micro)``, and process ``r`` owns micro-batches
``r * accum ... (r + 1) * accum - 1``. A run on N processes therefore sees exactly the
micro-batches of a 1-process run with the same global batch, only spread out.

A row that fails to encode is replaced by the next row of the same source and category.
The failures are exchanged between processes first, so every sampler makes the same
replacements in the same order and the samplers never diverge.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import random
import shutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jvlm.errors import TrainConfigError
from jvlm.train import checkpoint as ckpt_io
from jvlm.train import distributed
from jvlm.train.config import TrainConfig, config_digest, load_config
from jvlm.train.data import (
    TEXT,
    BadRows,
    ExampleEncoder,
    RowError,
    collate,
    encode_ref,
    index_source,
)
from jvlm.train.metrics import MetricsLog, Progress, Throughput, plot_metrics
from jvlm.train.mixing import MixingSampler, SampleRef, build_phases
from jvlm.train.objective import ModelWithLoss
from jvlm.train.optim import (
    Schedule,
    apply_freezing,
    build_optimizer,
    enable_activation_checkpointing,
)
from jvlm.train.signals import GracefulStop, StepLog, TrainingInterrupted

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_model: Path  # a model folder usable by `jvlm infer` and as a stage-2 start
    steps: int
    final_loss: float
    metrics: Path
    plot: Path | None
    bad_rows: dict[str, dict[str, int]] = field(default_factory=dict)


def build_model(cfg: TrainConfig, resume_from: Path | None):
    """``(model, processor)`` in fp32 on the CPU: from a checkpoint being resumed, a jvlm
    folder, SigLIP + Qwen3 parts, or a random preset."""
    from jvlm.loading import load_model
    from jvlm.processing.processor import JinaVLMProcessor

    m = cfg.model
    if resume_from is not None and cfg.lora is None:
        folder = resume_from / "model"
    elif m.checkpoint:  # (in LoRA mode, resuming starts from the base and reloads the adapter)
        from jvlm.resolve import resolve_model

        folder = resolve_model(m.checkpoint).path  # a folder, jvlm-demo, or a Hugging Face repo id
    else:
        folder = None
    if folder is not None:
        model = load_model(folder, dtype="fp32", device="cpu")
        processor = JinaVLMProcessor.from_pretrained(folder)
        model.use_token_ids(processor.token_ids)
    elif m.kind() == "parts":
        from jvlm.train.init_from_parts import build_from_parts

        model, processor = build_from_parts(m.vision, m.text, m.tokenizer, m.vit_layers, m.projector_size,
                                            m.init_seed, m.connector_init_std)
    else:
        from jvlm.tools.random_model import build_random_model

        model, processor = build_random_model(m.preset, seed=m.init_seed)
    return model.float().train(), processor


def lora_optim(cfg: TrainConfig):
    """The optimiser settings of LoRA mode: every group at the adapters' learning rate."""
    import copy

    optim = copy.deepcopy(cfg.optim)
    for group in optim.groups.values():
        group.lr, group.warmup_steps, group.freeze = cfg.lora.lr, cfg.lora.warmup_steps, False
    return optim


def _find_resume(root: Path, resume: bool | str | None) -> Path | None:
    if resume in (None, False):
        existing = ckpt_io.find_latest(root)
        if existing is not None:
            raise TrainConfigError(
                f"{root} already holds checkpoints (latest {existing.name}); pass --resume to continue "
                "that run, or choose another output_dir"
            )
        return None
    if resume in (True, "auto"):
        found = ckpt_io.find_latest(root)
        if found is None:
            log.warning("--resume: no checkpoint under %s yet, starting from the beginning", root)
        return found
    path = Path(resume)
    if (path / ckpt_io.STATE_FILE).is_file():
        return path
    found = ckpt_io.find_latest(path / "checkpoints") or ckpt_io.find_latest(path)
    if found is None:
        raise TrainConfigError(f"--resume {path}: no training checkpoint there")
    return found


class Trainer:
    """Builds everything a run needs (model, optimiser, data, sampler; restored from a
    checkpoint when resuming) and runs optimiser steps until ``optim.steps``."""

    def __init__(self, cfg: TrainConfig, resume: bool | str | None = None):
        self.cfg = cfg
        self.ctx = distributed.setup(cfg.device, cfg.distributed.backend)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.out = Path(cfg.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        resume_from = _find_resume(self.ckpt_root, resume)
        if self.ctx.is_main:
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
            ckpt_io.clean_partial(self.ckpt_root)
        self.ctx.barrier()

        model, self.processor = build_model(cfg, resume_from)
        optim_cfg = cfg.optim
        if cfg.lora is not None:
            from jvlm.train import lora

            log.info("LoRA mode: %s", lora.add_adapters(model, cfg.lora))
            if resume_from is not None:
                lora.load_adapter(model, resume_from / lora.ADAPTER_DIR)
            optim_cfg = lora_optim(cfg)
        else:
            counts = apply_freezing(model, cfg.optim)
            log.info("trainable parameters per group: %s", counts)
        if cfg.optim.activation_checkpointing:
            enable_activation_checkpointing(model)
        self.model = model.to(self.ctx.device)
        self.wrapped = distributed.wrap(ModelWithLoss(self.model, touch_all=self.ctx.enabled), self.ctx,
                                        cfg.distributed.strategy)
        self.optimizer = build_optimizer(self.wrapped.named_parameters(), optim_cfg)
        self.schedule = Schedule(self.optimizer, cfg.optim.steps, cfg.optim.schedule, cfg.optim.min_lr_ratio)
        self.trainable = [p for p in self.wrapped.parameters() if p.requires_grad]

        self.index_bad, self.bad = BadRows(), BadRows()  # malformed at indexing / found while training
        self.sources = [index_source(s.name, s.path, self.index_bad) for s in cfg.data.sources]
        names = [s.name for s in cfg.data.sources]
        phases = cfg.phases()
        shares = [cfg.resolved_text_only_share(p) for p in phases]
        self.sampler = MixingSampler(self.sources, build_phases(phases, names, cfg.optim.steps, shares), cfg.seed)
        self.encoder = ExampleEncoder(self.processor, cfg.data.max_length, cfg.data.max_crops)
        workers = cfg.data.num_workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="jvlm-data") if workers > 0 else None
        self.accum = cfg.accumulation_steps(self.ctx.world_size)
        self.step = 0
        self.resumed = resume_from is not None
        self.totals = {"samples": 0, "target_tokens": 0, "tokens": 0, "elapsed_s": 0.0}
        if resume_from is not None:
            self._restore(resume_from)
        self.metrics = None
        if self.ctx.is_main:
            self.metrics = MetricsLog(self.out / "metrics.jsonl", self.step if self.resumed else None)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")

    # ----------------------------------------------------------------- state
    def _restore(self, path: Path) -> None:
        state = ckpt_io.read_state(path)
        if state.get("config_digest") != config_digest(self.cfg):
            log.warning("the config differs from the one %s was written with; continuing with the new one", path.name)
        ckpt_io.load_optimizer(path, self.wrapped, self.optimizer, self.ctx)
        self.sampler.load_state_dict(state["sampler"])
        self.bad.load_state_dict(state["bad_rows"])
        self.step, self.totals = state["step"], state["totals"]
        rngs = state["rng"]
        ckpt_io.set_rng_state(rngs[self.ctx.rank] if self.ctx.rank < len(rngs) else rngs[0])
        log.info("resumed from %s at step %d", path, self.step)

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "totals": self.totals, "sampler": self.sampler.state_dict(),
                "bad_rows": self.bad.state_dict(), "config_digest": config_digest(self.cfg),
                "world_size": self.ctx.world_size}

    def save(self) -> Path:
        return ckpt_io.save_checkpoint(self.ckpt_root, self.step, self.wrapped, self.optimizer, self.model.cfg,
                                       self.model.tied, self.processor, self._state(), self.ctx,
                                       self.cfg.checkpoint.keep_last, lora=self.cfg.lora,
                                       base_model=self.cfg.model.checkpoint)

    # ------------------------------------------------------------------ data
    def _encode(self, ref: SampleRef):
        return encode_ref(self.encoder, self.sources[ref.source], ref.category, ref.row)

    def _examples(self, refs: list[SampleRef], mine: range) -> list:
        """Encode this process's slice, replacing bad rows identically on every process."""
        done: dict[int, Any] = {}
        todo = list(mine)
        while True:
            batch = [refs[i] for i in todo]
            results = self.pool.map(self._try_encode, batch) if self.pool else map(self._try_encode, batch)
            failures = []
            for pos, res in zip(todo, results):
                if isinstance(res, RowError):
                    src = self.sources[refs[pos].source]
                    failures.append((pos, src.name, src.line(refs[pos].category, refs[pos].row), res.reason, str(res)))
                else:
                    done[pos] = res
            every = sorted(f for part in self.ctx.gather_objects(failures) for f in part)
            if not every:
                return [done[i] for i in mine]
            todo = []
            for pos, source, line, reason, message in every:
                self.bad.add(source, line, reason, message)
                refs[pos] = self.sampler.replace(refs[pos])
                if pos in mine:
                    todo.append(pos)

    def _try_encode(self, ref: SampleRef):
        try:
            return self._encode(ref)
        except RowError as e:
            return e

    # ------------------------------------------------------------------ step
    def train_step(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        micro, total = cfg.optim.micro_batch_size, cfg.optim.global_batch_size
        phase = self.sampler.set_step(self.step)
        refs = [self.sampler.draw() for _ in range(total)]
        per_rank = self.accum * micro
        examples = self._examples(refs, range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank))
        batches = [collate(self.processor, examples[i * micro:(i + 1) * micro]) for i in range(self.accum)]
        n_targets, n_tokens = ctx.sum([sum(int((b["labels"] >= 0).sum()) for b in batches),
                                       sum(int(b["attention_mask"].sum()) for b in batches)])
        lrs = self.schedule.apply(self.step)
        scale = ctx.world_size / n_targets  # gradient = sum over the global batch / its target count
        loss_sum = 0.0
        for i, batch in enumerate(batches):
            batch = {k: v.to(ctx.device) for k, v in batch.items()}
            with distributed.no_sync(self.wrapped, sync=i == self.accum - 1):
                with self._autocast():
                    part = self.wrapped(**batch)
                (part * scale).backward()
            loss_sum += float(part.detach())
        if not ctx.enabled:  # match multi-process runs, where every trainable tensor gets a (zero) gradient
            for p in self.trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.optim.max_grad_norm or math.inf)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = ctx.sum([loss_sum])[0] / n_targets
        self.step += 1
        self.totals["samples"] += total
        self.totals["target_tokens"] += int(n_targets)
        self.totals["tokens"] += int(n_tokens)
        return {"step": self.step, "phase": phase.name, "loss": loss, "lr": lrs, "grad_norm": float(norm),
                "samples": total, "target_tokens": int(n_targets), "tokens": int(n_tokens),
                "text_only_share_step": sum(r.category == TEXT for r in refs) / total, **self.sampler.shares(),
                "bad_rows": self.bad.total + self.index_bad.total}

    def _autocast(self):
        if not self.cfg.optim.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        total_steps = cfg.optim.steps
        progress = Progress(total_steps, self.step, cfg.log.progress if ctx.is_main else False)
        timer = Throughput()
        last: dict[str, Any] = {"loss": float("nan")}
        saved_at = self.step if self.resumed else None
        # off a terminal (nohup, Slurm, CI) the bar is off: a log line per logged step instead
        step_log = (StepLog(total_steps, self.step)
                    if ctx.is_main and (progress.bar is None or not sys.stderr.isatty()) else None)
        stop = GracefulStop()
        try:
            stop.__enter__()
            while self.step < total_steps:
                rec = self.train_step()
                dt = timer.lap()
                self.totals["elapsed_s"] += dt
                rec.update(samples_per_s=rec["samples"] / dt, tokens_per_s=rec["tokens"] / dt,
                           elapsed_s=self.totals["elapsed_s"])
                last = rec
                if self.metrics and (self.step % cfg.log.every == 0 or self.step == total_steps):
                    self.metrics.write(rec)
                progress.update(self.step, rec["loss"], rec["tokens_per_s"])
                if step_log is not None and (self.step % cfg.log.every == 0 or self.step == total_steps):
                    log.info("%s", step_log.line(rec))
                if self.step % cfg.checkpoint.every == 0 or self.step == total_steps:
                    self.save()
                    saved_at = self.step
                    timer.lap()  # saving is not training time
                signalled = stop.signum is not None
                if ctx.enabled:  # every process stops after the same step, or saving would hang
                    signalled = ctx.sum([float(signalled)])[0] > 0
                if signalled and self.step < total_steps:
                    path = self.save() if saved_at != self.step else ckpt_io.step_dir(self.ckpt_root, self.step)
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, self.step, path)
        finally:
            stop.__exit__()
            progress.close()
            if self.pool:
                self.pool.shutdown()
        if saved_at != self.step:
            self.save()
        return self._finish(last)

    def _finish(self, last: dict[str, Any]) -> TrainResult:
        final = self.out / "final"
        plot = None
        bad = BadRows.merged(self.index_bad, self.bad)
        if self.ctx.is_main:
            tmp = self.out / ".final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            if self.cfg.lora is not None:  # merge the adapters into a full model folder
                from jvlm.loading import save_pretrained
                from jvlm.train import lora

                adapter = ckpt_io.step_dir(self.ckpt_root, self.step) / lora.ADAPTER_DIR
                shutil.rmtree(self.out / lora.ADAPTER_DIR, ignore_errors=True)
                shutil.copytree(adapter, self.out / lora.ADAPTER_DIR)
                save_pretrained(lora.merge_adapters(self.model).eval(), tmp, processor=self.processor)
            else:
                shutil.copytree(ckpt_io.step_dir(self.ckpt_root, self.step) / "model", tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            if self.cfg.log.plot:
                plot = plot_metrics(self.out / "metrics.jsonl", self.out / "metrics.png")
            summary = {"steps": self.step, "final_loss": last.get("loss"), **self.totals,
                       "text_only_share_run": self.sampler.shares()["text_only_share_run"],
                       "samples_per_source": dict(zip([s.name for s in self.sources], self.sampler.per_source)),
                       "bad_rows": bad.counts, "bad_row_examples": bad.examples}
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            log.info("training done: %d steps, final loss %.4f; %s", self.step, last.get("loss", float("nan")),
                     bad.summary())
        self.ctx.barrier()
        return TrainResult(self.out, final, self.step, float(last.get("loss", float("nan"))),
                           self.out / "metrics.jsonl", plot, bad.counts)


def train(config: TrainConfig | str | Path, resume: bool | str | None = None,
          overrides: dict[str, Any] | None = None) -> TrainResult:
    """Run a training config (a path to YAML, or a TrainConfig) to the end.

    ``resume``: None/False = fresh run (refused if the output folder has checkpoints);
    True/"auto" = continue from the latest checkpoint if any; a path = that checkpoint.
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config, overrides)
    trainer = Trainer(cfg, resume)
    ctx = trainer.ctx
    try:
        return trainer.run()
    finally:
        # The DDP reducer and FSDP mesh hold the process group; free them (and their reference
        # cycles) while the group is still alive, so nothing tears gloo down at interpreter exit.
        del trainer
        gc.collect()
        distributed.teardown(ctx)
