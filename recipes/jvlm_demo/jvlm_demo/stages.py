"""The recipe's data sets as data: ``stages.yaml`` read into typed ``DataSet`` entries.

Every choice a set makes (families, size, seed, how its answers are written) is a field of
its entry, so adding a stage is an edit of the table, not a new branch in the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import yaml

from jvlm_demo import synthetic

FORMS = ("plain", "transcription", "key_values", "read_then_answer", "drill")
READING_FLAGS = ("stop_at_asked", "state_goal", "receipts", "aligned", "by_row", "facts")
_FIELDS = ("name", "split", "seed", "n", "tasks", "questions", "form", "reading", "reworded_facts")


class StagesError(ValueError):
    """``stages.yaml`` (or a table passed in its place) does not describe valid data sets."""


@dataclass(frozen=True)
class DataSet:
    """One folder of ``python -m jvlm_demo data``."""

    name: str
    split: str
    seed: int
    n: int
    #: families drawn, in order; None = every family of ``synthetic.TASKS``
    tasks: tuple[str, ...] | None
    questions: int
    form: str = "plain"
    #: the ``read_then_answer`` / ``reading_drill`` flags switched on (``compare`` always is)
    reading: tuple[str, ...] = field(default=())
    reworded_facts: bool = False

    def reading_style(self) -> dict[str, bool]:
        """Keyword arguments of ``synthetic.read_then_answer`` / ``synthetic.reading_drill``."""
        return dict(compare=True, **{flag: flag in self.reading for flag in READING_FLAGS})


def _expand(tasks: list[str] | None, lists: dict[str, list[str]], where: str) -> tuple[str, ...] | None:
    if tasks is None:
        return None
    out: list[str] = []
    for name in tasks:
        out += lists.get(name, [name])
    unknown = sorted(set(out) - set(synthetic.TASKS))
    if unknown:
        raise StagesError(f"{where}: unknown families {unknown}; expected names of synthetic.TASKS "
                          f"{list(synthetic.TASKS)} or of task_lists {sorted(lists)}")
    return tuple(out)


def parse(table: dict[str, Any]) -> tuple[dict[str, tuple[str, ...]], list[DataSet]]:
    """(task lists, data sets) of a ``stages.yaml``-shaped mapping, checked."""
    lists = {k: list(v) for k, v in (table.get("task_lists") or {}).items()}
    sets, seen = [], set()
    for i, entry in enumerate(table.get("sets") or []):
        where = f"sets[{i}] ({entry.get('name', '?')})"
        extra = sorted(set(entry) - set(_FIELDS))
        if extra:
            raise StagesError(f"{where}: unknown fields {extra}; expected some of {list(_FIELDS)}")
        form = entry.get("form", "plain")
        if form not in FORMS:
            raise StagesError(f"{where}: form {form!r}; expected one of {list(FORMS)}")
        reading = tuple(entry.get("reading") or ())
        bad = sorted(set(reading) - set(READING_FLAGS))
        if bad:
            raise StagesError(f"{where}: unknown reading flags {bad}; expected some of {list(READING_FLAGS)}")
        if reading and form not in ("read_then_answer", "drill"):
            raise StagesError(f"{where}: reading flags only apply to forms read_then_answer and drill, not {form!r}")
        try:
            ds = DataSet(name=str(entry["name"]), split=str(entry["split"]), seed=int(entry["seed"]),
                         n=int(entry["n"]), tasks=_expand(entry.get("tasks"), lists, where),
                         questions=int(entry["questions"]), form=form, reading=reading,
                         reworded_facts=bool(entry.get("reworded_facts", False)))
        except KeyError as err:
            raise StagesError(f"{where}: missing field {err}") from None
        if ds.name in seen:
            raise StagesError(f"{where}: set {ds.name!r} appears twice")
        seen.add(ds.name)
        sets.append(ds)
    return {k: tuple(v) for k, v in lists.items()}, sets


def load() -> dict[str, Any]:
    """The packaged ``stages.yaml`` as a mapping."""
    return yaml.safe_load(files("jvlm_demo").joinpath("stages.yaml").read_text(encoding="utf-8"))


_TABLE = load()
TASK_LISTS, DATASETS = parse(_TABLE)
#: one crop of the demo ViT: every image costs thumbnail + 1 tile
DEMO_IMAGE_SIZE: int = int(_TABLE["image_size"])
#: questions per training conversation: one image carries several questions, so each pass
#: through the vision encoder teaches several answers (the held-out test asks one at a time)
TRAIN_QUESTIONS: int = int(_TABLE["train_questions"])
#: the families that print text in small sizes
DOCUMENT_TASKS = TASK_LISTS["documents"]
