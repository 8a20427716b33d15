"""The training YAML: what to start from, what data to mix, how to optimise, where to write.

Every field has a default, so a config only states what differs from the recipe. Relative
paths are resolved against the directory of the YAML file, so a config and its data can be
moved together. Defaults depend on ``stage`` where the paper says the stages differ
(stage 1 mixes in 15% text-only data; spec §11); learning rates beyond the connector's
2e-4 are this project's choice, since the paper's table could not be read (docs/training.md).

No torch here: the config is validated before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jvlm.config import dataclass_from_dict
from jvlm.errors import TrainConfigError

GROUPS = ("vision", "connector", "decoder", "new_embeddings")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class ModelSource:
    """Exactly one of: ``checkpoint`` (a jvlm folder), ``vision`` + ``text`` (parts), ``preset`` (random)."""

    checkpoint: str | None = None  # jvlm model folder: stage 2, fine-tuning
    vision: str | None = None  # SigLIP folder (SiglipVisionModel or SiglipModel key names)
    text: str | None = None  # Qwen3 folder (Qwen3ForCausalLM key names)
    tokenizer: str | None = None  # parts only: folder, "qwen" or "tiny"; default: the text folder
    preset: str | None = None  # random weights of a preset ("tiny"): tests and benchmarks
    init_seed: int = 0  # fresh connector / new rows / random preset
    vit_layers: tuple[int, ...] = (-4, -10)  # parts only: ViT states fed to the connector
    projector_size: int | None = None  # parts only: SwiGLU width; default the decoder's MLP size
    connector_init_std: float = 0.02

    def kind(self) -> str:
        given = [k for k, on in (("checkpoint", self.checkpoint), ("parts", self.vision or self.text),
                                 ("preset", self.preset)) if on]
        if len(given) != 1:
            raise TrainConfigError(
                f"model: give exactly one of 'checkpoint', 'vision'+'text' or 'preset'; found {given or 'none'}"
            )
        if given[0] == "parts" and not (self.vision and self.text):
            raise TrainConfigError("model: initialisation from parts needs both 'vision' and 'text' folders")
        return given[0]


@dataclass
class SourceConfig:
    name: str
    path: str
    weight: float = 1.0


@dataclass
class PhaseConfig:
    """One curriculum phase: which sources (by name, with weights) for how many steps."""

    name: str
    weights: dict[str, float]
    steps: int | None = None  # None: until the end of the run (last phase only)
    text_only_share: float | None | str = "inherit"  # "inherit": data.text_only_share


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    # Exact share of text-only samples (rows without images). None: source weights alone decide.
    text_only_share: float | None | str = "stage"  # "stage": 0.15 in stage 1, None in stage 2
    phases: list[PhaseConfig] = field(default_factory=list)
    max_length: int = 4096  # longer rows are skipped and counted
    max_crops: int | None = None  # default: the model's image config (12 for the release)
    num_workers: int = 0  # threads encoding images; 0 = in the training process


@dataclass
class GroupConfig:
    lr: float
    warmup_steps: int = 0
    freeze: bool = False
    weight_decay: float | None = None  # None: optim.weight_decay


def _stage_groups(stage: int) -> dict[str, GroupConfig]:
    """Stage defaults: the connector and the new rows learn fast, pretrained parts slowly."""
    if stage == 1:
        return {"vision": GroupConfig(6e-6, 200), "connector": GroupConfig(2e-4, 50),
                "decoder": GroupConfig(2e-5, 200), "new_embeddings": GroupConfig(2e-4, 50)}
    return {"vision": GroupConfig(2e-6, 100), "connector": GroupConfig(2e-5, 100),
            "decoder": GroupConfig(1e-5, 100), "new_embeddings": GroupConfig(2e-5, 100)}


@dataclass
class OptimConfig:
    steps: int = 1000
    global_batch_size: int = 32  # samples per optimiser step, over all processes
    micro_batch_size: int = 1  # samples per forward pass on one process
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1  # final lr as a fraction of each group's lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    bf16: bool = False  # bf16 autocast; weights and optimiser state stay fp32
    activation_checkpointing: bool = False
    groups: dict[str, GroupConfig] = field(default_factory=dict)


@dataclass
class CheckpointConfig:
    every: int = 500  # steps; the final step is always saved
    keep_last: int = 2


@dataclass
class LogConfig:
    every: int = 1
    progress: bool | str = "auto"  # rich progress bar; "auto": only on a terminal
    plot: bool = True


@dataclass
class DistributedConfig:
    strategy: str = "ddp"  # "ddp" or "fsdp" (FSDP2, for models that do not fit one device)
    backend: str = "auto"  # nccl on CUDA, gloo on CPU


@dataclass
class LoraSection:
    """LoRA mode (``jvlm.train.lora``): only low-rank adapters train; checkpoints hold the
    adapter alone; the run ends with the adapters merged into a full model folder."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["decoder"])  # "decoder", "connector"
    lr: float = 2e-4  # every adapter's learning rate (the groups' lrs are for full training)
    warmup_steps: int = 0


@dataclass
class TrainConfig:
    model: ModelSource
    data: DataConfig
    output_dir: str = "runs/jvlm"
    stage: int = 1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: torch's default
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    lora: LoraSection | None = None  # a section turns LoRA mode on

    # --------------------------------------------------------------- derived
    def resolved_text_only_share(self, phase: PhaseConfig | None = None) -> float | None:
        share = self.data.text_only_share
        if phase is not None and phase.text_only_share != "inherit":
            share = phase.text_only_share
        if share == "stage":
            share = 0.15 if self.stage == 1 else None
        return share

    def phases(self) -> list[PhaseConfig]:
        """The curriculum; without one, a single phase with every source at its weight."""
        if self.data.phases:
            return self.data.phases
        return [PhaseConfig("all", {s.name: s.weight for s in self.data.sources}, None)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        self.model.kind()
        if self.stage not in (1, 2):
            raise TrainConfigError(f"stage must be 1 or 2, found {self.stage}")
        d, o = self.data, self.optim
        if not d.sources:
            raise TrainConfigError("data.sources is empty; list at least one JSONL file")
        names = [s.name for s in d.sources]
        if len(set(names)) != len(names):
            raise TrainConfigError(f"data.sources names must be unique, found {names}")
        for s in d.sources:
            if not s.weight > 0:
                raise TrainConfigError(f"data source {s.name!r}: weight must be > 0, found {s.weight}")
        for i, ph in enumerate(self.phases()):
            unknown = sorted(set(ph.weights) - set(names))
            if unknown:
                raise TrainConfigError(f"phase {ph.name!r} names unknown sources {unknown}; known: {names}")
            if not ph.weights or any(not w > 0 for w in ph.weights.values()):
                raise TrainConfigError(f"phase {ph.name!r}: give at least one source, each with weight > 0")
            if ph.steps is None and i != len(self.phases()) - 1:
                raise TrainConfigError(f"phase {ph.name!r}: only the last phase may omit 'steps'")
            share = self.resolved_text_only_share(ph)
            if share is not None and not 0.0 <= share <= 1.0:
                raise TrainConfigError(f"text_only_share must be in [0, 1] or null, found {share}")
        if o.schedule not in SCHEDULES:
            raise TrainConfigError(f"optim.schedule must be one of {SCHEDULES}, found {o.schedule!r}")
        if o.steps <= 0 or o.micro_batch_size <= 0 or o.global_batch_size <= 0:
            raise TrainConfigError("optim.steps, global_batch_size and micro_batch_size must be positive")
        if o.global_batch_size % o.micro_batch_size:
            raise TrainConfigError(
                f"optim.global_batch_size ({o.global_batch_size}) must be a multiple of micro_batch_size "
                f"({o.micro_batch_size})"
            )
        unknown = sorted(set(o.groups) - set(GROUPS))
        if unknown:
            raise TrainConfigError(f"optim.groups: unknown groups {unknown}; the groups are {list(GROUPS)}")
        if self.distributed.strategy not in ("ddp", "fsdp"):
            raise TrainConfigError(f"distributed.strategy must be 'ddp' or 'fsdp', found {self.distributed.strategy!r}")
        if self.checkpoint.every <= 0 or self.checkpoint.keep_last <= 0:
            raise TrainConfigError("checkpoint.every and checkpoint.keep_last must be positive")
        if self.lora is not None:
            lo = self.lora
            if lo.r <= 0 or lo.alpha <= 0 or not 0.0 <= lo.dropout < 1.0 or lo.lr <= 0:
                raise TrainConfigError("lora: r, alpha and lr must be positive and dropout in [0, 1)")
            bad = sorted(set(lo.targets) - {"decoder", "connector"})
            if bad or not lo.targets:
                raise TrainConfigError(f"lora.targets: {bad or 'empty'}; choose from ['connector', 'decoder']")
            if self.distributed.strategy == "fsdp":
                raise TrainConfigError("lora mode runs with distributed.strategy 'ddp' (the adapters are small)")
        return self

    def accumulation_steps(self, world_size: int) -> int:
        o = self.optim
        per_step = o.micro_batch_size * world_size
        if o.global_batch_size % per_step:
            raise TrainConfigError(
                f"global_batch_size {o.global_batch_size} is not divisible by micro_batch_size x processes "
                f"= {o.micro_batch_size} x {world_size}; change one of them"
            )
        return o.global_batch_size // per_step


# ------------------------------------------------------------------- parsing
def _build(klass, raw: Any, where: str):
    """Dataclass from a mapping, refusing unknown keys (a typo must not be silently ignored)."""
    obj = dataclass_from_dict(klass, raw, where, error=TrainConfigError)
    _check_scalar_types(obj, where)
    return obj


_SCALARS = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "a string"),
            "bool": ((bool,), "true or false")}


def _check_scalar_types(obj, where: str) -> None:
    """Scalar fields hold what their annotation says (``--set optim.steps=abc`` is an error
    here, not a TypeError deep inside validation or training)."""
    for f in dataclasses.fields(obj):
        annotation = str(f.type).replace(" ", "")
        optional = annotation.endswith("|None")
        kind = _SCALARS.get(annotation.removesuffix("|None"))
        value = getattr(obj, f.name)
        if kind is None or (value is None and optional):
            continue
        types, wanted = kind
        if wanted == "a number" and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
                setattr(obj, f.name, value)
            except ValueError:
                pass
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise TrainConfigError(f"{where}.{f.name} must be {wanted}, found {value!r}")


def config_from_dict(raw: dict[str, Any], base_dir: str | Path = ".") -> TrainConfig:
    """Build and validate a TrainConfig; relative paths are taken from ``base_dir``."""
    if not isinstance(raw, dict):
        raise TrainConfigError("the training config must be a YAML mapping")
    raw = dict(raw)
    base = Path(base_dir)
    for key in ("model", "data"):
        if key not in raw:
            raise TrainConfigError(f"the training config needs a '{key}' section")
    model = _build(ModelSource, raw.pop("model"), "model")
    model.vit_layers = tuple(model.vit_layers)
    data_raw = dict(raw.pop("data"))
    sources = [_build(SourceConfig, s, f"data.sources[{i}]") for i, s in enumerate(data_raw.pop("sources", []) or [])]
    phases = [_build(PhaseConfig, p, f"data.phases[{i}]") for i, p in enumerate(data_raw.pop("phases", []) or [])]
    data = _build(DataConfig, data_raw, "data")
    data.sources, data.phases = sources, phases
    optim_raw = dict(raw.pop("optim", {}) or {})
    groups_raw = optim_raw.pop("groups", {}) or {}
    optim = _build(OptimConfig, optim_raw, "optim")
    optim.betas = tuple(float(b) for b in optim.betas)
    sections = {
        "checkpoint": CheckpointConfig, "log": LogConfig, "distributed": DistributedConfig,
    }
    kwargs = {k: _build(klass, raw.pop(k, {}) or {}, k) for k, klass in sections.items()}
    lora_raw = raw.pop("lora", None)
    kwargs["lora"] = None if lora_raw is None else _build(LoraSection, lora_raw or {}, "lora")
    cfg = _build(TrainConfig, {**raw, "model": model, "data": data, "optim": optim, **kwargs}, "config")
    defaults = _stage_groups(cfg.stage)
    if not isinstance(groups_raw, dict):
        raise TrainConfigError("optim.groups must map group names to settings")
    unknown = sorted(set(groups_raw) - set(GROUPS))
    if unknown:
        raise TrainConfigError(f"optim.groups: unknown groups {unknown}; the groups are {list(GROUPS)}")
    for name in GROUPS:
        merged = {**dataclasses.asdict(defaults[name]), **(groups_raw.get(name) or {})}
        optim.groups[name] = _build(GroupConfig, merged, f"optim.groups.{name}")
    _resolve_paths(cfg, base)
    return cfg.validate()


def _resolve_paths(cfg: TrainConfig, base: Path) -> None:
    def res(p: str | None) -> str | None:
        if p is None or p in ("qwen", "tiny"):
            return p
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    def res_model(p: str | None) -> str | None:
        """A folder relative to the config, else a model name (jvlm-demo, owner/name) as given:
        ``jvlm.resolve`` finds it when the run starts."""
        if p is None or Path(p).expanduser().is_absolute() or (base / p).exists():
            return res(p)
        from jvlm.resolve import is_model_name

        return p if is_model_name(p) else res(p)

    m = cfg.model
    m.checkpoint = res_model(m.checkpoint)
    m.vision, m.text, m.tokenizer = res(m.vision), res(m.text), res(m.tokenizer)
    for s in cfg.data.sources:
        s.path = res(s.path)
    cfg.output_dir = res(cfg.output_dir)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML (or JSON) training config. ``overrides`` use dotted keys: ``{"optim.steps": 10}``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"training config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{path} is not valid YAML: {e}") from None
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return config_from_dict(raw, path.parent)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise TrainConfigError(f"override {key}: {p} is not a section")
    node[parts[-1]] = value


def config_digest(cfg: TrainConfig) -> str:
    """A stable fingerprint of the settings that change the numbers (for resume checks)."""
    import hashlib

    d = cfg.to_dict()
    for k in ("output_dir", "log", "threads"):
        d.pop(k, None)
    d["checkpoint"] = None
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
