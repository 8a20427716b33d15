"""Tokenizer, special tokens and chat template.

The model reads token ids; this module decides which ids the text and the structural image
tokens get, and how a conversation becomes prompt text. It never hard-codes an id: everything
downstream asks ``special_token_ids(tokenizer)`` (spec, Corrections 6).

Building a tokenizer (the real Qwen vocabulary from its BPE ranks, or the tiny one the tests
use) is build-time work and lives in ``jvlm.tools.tokenizers``; this module only loads, saves
and applies one.

Chat template (``assets/chat_template.jinja``, ChatML): every turn is
``<|im_start|>{role}\\n{content}<|im_end|>\\n``; the generation prompt is
``<|im_start|>assistant\\n``. Each image part renders as one ``<|image|>`` placeholder with no
separator before the text that follows (as the mlx-vlm port lays prompts out; the released
template text is unknown). The template adds no BOS: the processor prepends it to the ids
(spec §4.4). A model folder may carry its own ``chat_template.jinja`` (Corrections 9).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jinja2
from transformers import PreTrainedTokenizerFast

from jvlm.config import SpecialTokens
from jvlm.errors import ModelFolderError, PromptError, TokenizerError

logger = logging.getLogger(__name__)

STRUCTURAL_TOKENS: tuple[str, ...] = tuple(SpecialTokens().structural())

_TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "assets" / "chat_template.jinja"
DEFAULT_CHAT_TEMPLATE: str = _TEMPLATE_PATH.read_text(encoding="utf-8")

# (name, special) for ids 151643..151668, as in the Qwen3 tokenizer; "special" tokens are
# dropped by decode(skip_special_tokens=True), the others are ordinary text markers.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
ENDOFTEXT, IM_END = "<|endoftext|>", "<|im_end|>"


def extra_token_names(n_extra: int = 128) -> tuple[str, ...]:
    """Names of the extra tokens, in new_embedding row order (structural six first)."""
    return STRUCTURAL_TOKENS + tuple(f"<jvlm_extra_{row}>" for row in range(len(STRUCTURAL_TOKENS), n_extra))


# ---------------------------------------------------------------------------- special ids
@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the tokens the processor, the model and the sampler must agree on."""

    im_start: int
    im_end: int
    im_patch: int
    im_col: int
    image: int  # the <|image|> prompt placeholder
    im_slice: int | None  # unused by overlap-and-resize; None when the tokenizer lacks it
    bos: int
    eos: tuple[int, ...]  # every id that ends generation
    pad: int

    def structural(self) -> tuple[int, ...]:
        """Ids that only the processor may place; a sampler must never produce them."""
        ids = (self.im_start, self.im_end, self.im_patch, self.im_col, self.image, self.im_slice)
        return tuple(i for i in ids if i is not None)


def _token_id(tokenizer, token: str, required: bool = True) -> int | None:
    """The single id ``token`` encodes to; None if absent and not required."""
    tid = tokenizer.convert_tokens_to_ids(token)
    present = tid is not None and not (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id)
    if not present and not required:
        return None
    ids = tokenizer.encode(token, add_special_tokens=False)
    if not present or ids != [tid]:
        raise TokenizerError(
            f"token {token!r} must encode to exactly one id, but the tokenizer gives {ids[:8]} "
            f"({len(ids)} ids); add it as a special token, or use a tokenizer built for Jina-VLM "
            "(jvlm.tools.tokenizers.build_qwen_tokenizer)"
        )
    return tid


def special_token_ids(tokenizer, tokens: SpecialTokens = SpecialTokens()) -> SpecialTokenIds:
    """Read every special id from ``tokenizer`` (never from code; spec Corrections 6).

    BOS is ``bos_token_id``, else ``eos_token_id`` (Qwen defines no BOS, so this is
    ``<|endoftext|>``; spec §4.4). Stop ids are EOS plus ``<|im_end|>`` and ``<|endoftext|>``
    when the tokenizer has them, since a chat turn ends with the former.
    """
    eos_id = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id
    if bos is None:
        raise TokenizerError(
            "the tokenizer defines neither bos_token nor eos_token; set eos_token "
            "(e.g. '<|endoftext|>') in tokenizer_config.json"
        )
    stops: list[int] = [] if eos_id is None else [eos_id]
    for name in (IM_END, ENDOFTEXT):
        tid = _token_id(tokenizer, name, required=False)
        if tid is not None and tid not in stops:
            stops.append(tid)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    return SpecialTokenIds(
        im_start=_token_id(tokenizer, tokens.im_start),
        im_end=_token_id(tokenizer, tokens.im_end),
        im_patch=_token_id(tokenizer, tokens.im_patch),
        im_col=_token_id(tokenizer, tokens.im_col),
        image=_token_id(tokenizer, tokens.image),
        im_slice=_token_id(tokenizer, tokens.im_slice, required=False),
        bos=bos,
        eos=tuple(stops),
        pad=pad,
    )


# ----------------------------------------------------------------------- folder I/O + chat
def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Load a model folder's tokenizer with its chat template.

    The template is the folder's ``chat_template.jinja``, else one stored in
    ``tokenizer_config.json`` (older checkpoints), else the ChatML default.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"tokenizer folder {folder} does not exist")
    missing = [n for n in ("tokenizer.json", "tokenizer_config.json") if not (folder / n).is_file()]
    if missing:
        raise ModelFolderError(
            f"{folder} lacks {' and '.join(missing)}; a model folder needs both tokenizer files "
            "(copy them from the checkpoint, or write them with jvlm.processing.text.save_tokenizer)"
        )
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # tokenizers raises bare Exception on malformed JSON
        raise ModelFolderError(f"cannot read the tokenizer in {folder}: {exc}") from exc
    template_file = folder / "chat_template.jinja"
    if template_file.is_file():
        tokenizer.chat_template = template_file.read_text(encoding="utf-8")
    elif not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path, chat_template: str | None = None) -> None:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja.

    The template lives only in its own file so that one edit changes it (Corrections 9).
    ``tokenizer_class`` is written as ``PreTrainedTokenizerFast`` so Transformers 4.x loads it too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = chat_template or tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
    if not isinstance(template, str):
        raise TokenizerError(f"chat_template must be one Jinja string, got {type(template).__name__}")
    tokenizer.save_pretrained(str(folder))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    names = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    special_map = {k: str(v) for k, v in names.items() if v is not None}
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")


def render_chat(tokenizer, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Prompt text for ``messages`` (HF messages format); bad roles/parts raise PromptError."""
    template = tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
    try:
        return tokenizer.apply_chat_template(
            list(messages),
            chat_template=template if isinstance(template, str) else None,  # dict: named templates, HF picks
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except jinja2.TemplateError as exc:
        raise PromptError(f"cannot render the chat: {exc}") from exc
