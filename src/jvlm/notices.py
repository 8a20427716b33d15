"""What a command says about the model it answers with, before the answer.

Two bundled models are not the released Jina-VLM: ``jvlm/tiny-random`` (random weights,
its answers are noise) and ``jvlm-demo`` (the default: a 5.6 M-parameter model that knows
only the synthetic world it was trained on). A newcomer who asks the default model about
a holiday photo would otherwise read a confident wrong answer as a broken project, so
every entry point (``jvlm infer``, ``jvlm chat``, ``jvlm serve``'s log, ``/v1/models`` and
the playground) shows the same one line. See ``assets/jvlm-demo/MODEL_CARD.md``.
"""

from __future__ import annotations

from jvlm.resolve import DEMO_MODEL, RELEASED_MODEL, ResolvedModel, random_model_notice

#: where the released checkpoint's set-up is described
RELEASED_MODEL_DOC = "docs/using-the-released-model.md"


def demo_model_notice() -> str:
    return (f"note: answering with {DEMO_MODEL}, the bundled 5.6 M-parameter demo model: it knows only its "
            "synthetic world (shapes, signs, forms, receipts, charts and tables like those in examples/, "
            "small sums, translations of its own words) and answers anything else with nonsense. "
            f"For real answers: `hf download {RELEASED_MODEL}`, then --model {RELEASED_MODEL} "
            f"(see {RELEASED_MODEL_DOC}).")


def model_notice(resolved: ResolvedModel) -> str | None:
    """The one-line notice for a model that is not a real checkpoint, else None."""
    if resolved.is_random:
        return random_model_notice(resolved.name)
    if resolved.name == DEMO_MODEL:
        return demo_model_notice()
    return None
