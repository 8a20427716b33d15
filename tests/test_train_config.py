"""The training YAML: stage defaults, strict keys, paths relative to the file, batch arithmetic."""

from __future__ import annotations

import pytest
import yaml

from jvlm.errors import TrainConfigError
from jvlm.train.config import load_config


def _write(tmp_path, **sections) -> str:
    raw = {"model": {"preset": "tiny"}, "data": {"sources": [{"name": "a", "path": "data/a.jsonl"}]}}
    raw.update(sections)
    path = tmp_path / "cfg" / "train.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_stage_one_defaults_follow_the_paper(tmp_path):
    cfg = load_config(_write(tmp_path))
    assert cfg.resolved_text_only_share() == 0.15  # spec §11: 15% text-only in stage 1
    g = cfg.optim.groups
    assert g["connector"].lr == 2e-4  # the connector learns fast ...
    assert g["vision"].lr < g["connector"].lr and g["decoder"].lr < g["connector"].lr  # ... pretrained parts slowly
    assert g["connector"].warmup_steps < g["decoder"].warmup_steps  # shorter warmup for the connector


def test_stage_two_and_explicit_values(tmp_path):
    cfg = load_config(_write(tmp_path, stage=2, optim={"groups": {"vision": {"freeze": True}}}))
    assert cfg.resolved_text_only_share() is None
    assert cfg.optim.groups["vision"].freeze and cfg.optim.groups["vision"].lr > 0  # defaults kept


def test_relative_paths_are_taken_from_the_config_file(tmp_path):
    cfg = load_config(_write(tmp_path, output_dir="out"))
    assert cfg.data.sources[0].path == str((tmp_path / "cfg" / "data" / "a.jsonl").resolve())
    assert cfg.output_dir == str((tmp_path / "cfg" / "out").resolve())


def test_a_typo_is_an_error_that_names_the_key(tmp_path):
    with pytest.raises(TrainConfigError, match="learning_rate"):
        load_config(_write(tmp_path, optim={"learning_rate": 1e-4}))
    with pytest.raises(TrainConfigError, match="unknown groups"):
        load_config(_write(tmp_path, optim={"groups": {"projector": {"lr": 1e-4}}}))


def test_batch_split_must_be_whole(tmp_path):
    with pytest.raises(TrainConfigError, match="multiple of micro_batch_size"):
        load_config(_write(tmp_path, optim={"global_batch_size": 6, "micro_batch_size": 4}))
    cfg = load_config(_write(tmp_path, optim={"global_batch_size": 8, "micro_batch_size": 2}))
    assert cfg.accumulation_steps(1) == 4 and cfg.accumulation_steps(2) == 2
    with pytest.raises(TrainConfigError, match="not divisible"):
        cfg.accumulation_steps(3)


def test_phases_must_name_known_sources_and_only_the_last_may_be_open(tmp_path):
    with pytest.raises(TrainConfigError, match="unknown sources"):
        load_config(_write(tmp_path, data={"sources": [{"name": "a", "path": "a.jsonl"}],
                                           "phases": [{"name": "p", "weights": {"b": 1}}]}))
    with pytest.raises(TrainConfigError, match="only the last phase"):
        load_config(_write(tmp_path, data={"sources": [{"name": "a", "path": "a.jsonl"}],
                                           "phases": [{"name": "p", "weights": {"a": 1}},
                                                      {"name": "q", "weights": {"a": 1}, "steps": 3}]}))


def test_model_source_must_be_exactly_one(tmp_path):
    with pytest.raises(TrainConfigError, match="exactly one"):
        load_config(_write(tmp_path, model={"preset": "tiny", "checkpoint": "x"}))
    with pytest.raises(TrainConfigError, match="both 'vision' and 'text'"):
        load_config(_write(tmp_path, model={"vision": "siglip"}))


def test_overrides_use_dotted_keys(tmp_path):
    cfg = load_config(_write(tmp_path), {"optim.steps": 7, "optim.groups.connector.lr": 1e-3})
    assert cfg.optim.steps == 7 and cfg.optim.groups["connector"].lr == 1e-3


def test_the_shipped_recipe_files_load_and_chain():
    # scripts/train_demo.sh runs for hours; a recipe YAML with a typo, or a stage that starts
    # from a folder no earlier stage writes, would only fail when its turn comes. Every
    # `jvlm train` the scripts call must load, and every model it starts from must be a folder
    # the scripts create before it (a stage's output_dir/final or a `--out` of a demo tool).
    import re
    from pathlib import Path

    from shipped import ROOT as root
    run = (root / "runs" / "demo").resolve()
    made: set[Path] = set()
    trained = []
    def script_lines(name):  # the script's lines, with the scripts it calls read in their place
        for line in (root / "scripts" / name).read_text(encoding="utf-8").splitlines():
            called = None if line.lstrip().startswith("#") else re.search(r"bash scripts/(\S+\.sh)", line)
            yield from script_lines(called.group(1)) if called else [line]

    lines = list(script_lines("train_demo.sh"))
    for line in lines:
        for out in re.findall(r'--out "\$RUN/([\w/]+)"', line):
            made.add(run / out)
        m = re.match(r"\s*jvlm train (\S+\.yaml)", line)
        if m:
            cfg = load_config(root / m.group(1))
            start = Path(cfg.model.checkpoint)
            assert start in made, f"{m.group(1)} starts from {start}, which no earlier step writes"
            made.add(Path(cfg.output_dir) / "final")
            trained.append(m.group(1))
    assert "examples/train/demo_graft_stage4.yaml" in trained
    assert set(trained) == {f"examples/train/{p.name}" for p in (root / "examples" / "train").glob("demo_*.yaml")}
    ship = [line for line in lines if "python -m jvlm_demo ship" in line]
    assert len(ship) == 1
    shipped = run / re.search(r'--model "\$RUN/([\w/]+)"', ship[0]).group(1)
    assert shipped == Path(load_config(root / trained[-1]).output_dir) / "final"  # ships the last stage
