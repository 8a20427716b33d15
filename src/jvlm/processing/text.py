"""Tokenizer, special tokens and chat template.

The model reads token ids; this module decides which ids the text and the structural image
tokens get, and how a conversation becomes prompt text. It never hard-codes an id: everything
downstream asks ``special_token_ids(tokenizer)`` (spec, Corrections 6).

Two tokenizers can be built offline, both Hugging Face ``PreTrainedTokenizerFast`` objects with
the same pipeline as Qwen2/Qwen3 (NFC normalizer, Qwen's split regex, byte-level BPE, no BOS):

* ``build_qwen_tokenizer`` rebuilds the real Qwen vocabulary from ``qwen.tiktoken`` (151,643
  byte-level BPE ranks; the rank of a token is its id). Merges are recovered by re-running BPE
  on each token's bytes with only lower-ranked merges allowed, which yields the one pair that
  creates it. Then come the Qwen3 added tokens (151643 ``<|endoftext|>`` ... 151668 ``</think>``).
* ``build_tiny_tokenizer`` trains a 1,021-token BPE on a small built-in multilingual text and
  appends ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (ids 1021-1023): 1,024 base ids,
  matching the ``tiny`` preset's ``vocab_size``.

Both then carry the 128 Jina-VLM extra tokens, whose ids index ``new_embedding`` rows
(id = base rows + row):

* rows 0-5: the structural tokens in the order of spec §2 -- ``<im_start>``, ``<im_end>``,
  ``<im_patch>``, ``<im_col>``, ``<|image|>``, ``<im_slice>`` (151936-151941 for Qwen);
* rows 6-127: reserved, named ``<jvlm_extra_{row}>`` (``<jvlm_extra_6>`` ... ``<jvlm_extra_127>``).

Qwen's embedding table has 151,936 rows but its tokenizer ends at 151668; the unused ids
151669-151935 are filled with special tokens ``<jvlm_unused_{id}>`` so that the extra tokens
land on their rows and ``len(tokenizer)`` equals the model's total rows (152,064).

Chat template (``assets/chat_template.jinja``, ChatML): every turn is
``<|im_start|>{role}\\n{content}<|im_end|>\\n``; the generation prompt is
``<|im_start|>assistant\\n``. Each image part renders as one ``<|image|>`` placeholder with no
separator before the text that follows (as the mlx-vlm port lays prompts out; the released
template text is unknown). The template adds no BOS: the processor prepends it to the ids
(spec §4.4). A model folder may carry its own ``chat_template.jinja`` (Corrections 9).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import jinja2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers
from transformers import PreTrainedTokenizerFast

from jvlm.config import JinaVLMConfig, SpecialTokens
from jvlm.errors import ModelFolderError, PromptError, TokenizerError

logger = logging.getLogger(__name__)

STRUCTURAL_TOKENS: tuple[str, ...] = tuple(SpecialTokens().structural())

_TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "assets" / "chat_template.jinja"
DEFAULT_CHAT_TEMPLATE: str = _TEMPLATE_PATH.read_text(encoding="utf-8")

# Qwen2/Qwen3 pre-tokenizer: contractions, letter runs with one leading non-letter, single
# digits, punctuation runs, newlines, and whitespace that does not swallow the next word's space.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN_BASE_VOCAB = 151_643  # BPE ranks in qwen.tiktoken; 151643 is <|endoftext|>
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
TINY_BASE_VOCAB = 1024
_TINY_ADDED_TOKENS = (("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True))
ENDOFTEXT, IM_END = "<|endoftext|>", "<|im_end|>"
TIKTOKEN_ENV = "JVLM_QWEN_TIKTOKEN"
_BUILD_VERSION = 1  # bump when the built tokenizer.json would change; invalidates the disk cache


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
            "(jvlm.processing.text.build_qwen_tokenizer)"
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


# ------------------------------------------------------------------------ building blocks
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are mapped, in byte order,
    to U+0100 onwards so that every vocabulary entry is a visible string.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def _qwen_pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def add_jvlm_tokens(tok: Tokenizer, base_added: Sequence[tuple[str, bool]], base_rows: int, n_extra: int) -> None:
    """Append the base added tokens, gap fillers up to ``base_rows``, then the extra tokens.

    Added tokens take consecutive ids, so the fillers are what puts ``<im_start>`` on row
    ``base_rows`` (= its new_embedding row 0).
    """
    tok.add_tokens([AddedToken(n, special=s, normalized=False) for n, s in base_added])
    n = tok.get_vocab_size(with_added_tokens=True)
    if n > base_rows:
        raise TokenizerError(f"base vocabulary has {n} ids, more than the {base_rows} embedding rows")
    tok.add_tokens([AddedToken(f"<jvlm_unused_{i}>", special=True, normalized=False) for i in range(n, base_rows)])
    tok.add_tokens([AddedToken(n, special=True, normalized=False) for n in extra_token_names(n_extra)])
    if tok.token_to_id(STRUCTURAL_TOKENS[0]) != base_rows:  # guards the layout, not user input
        raise TokenizerError(f"{STRUCTURAL_TOKENS[0]} landed on id {tok.token_to_id(STRUCTURAL_TOKENS[0])}, not {base_rows}")


def wrap_tokenizer(tok: Tokenizer | str | Path, model_max_length: int) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` object (or tokenizer.json path) as a Transformers fast tokenizer with
    the project's special-token settings and chat template."""
    source = {"tokenizer_file": str(tok)} if isinstance(tok, (str, Path)) else {"tokenizer_object": tok}
    return PreTrainedTokenizerFast(
        **source,
        bos_token=None,  # Qwen has no BOS; special_token_ids falls back to EOS (spec §4.4)
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # cleanup would break decode(encode(x)) == x
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )


# -------------------------------------------------------------------------------- Qwen
def find_qwen_tiktoken(tiktoken_path: str | Path | None = None) -> Path:
    """The rank file: explicit path, else $JVLM_QWEN_TIKTOKEN, else the installed qwen-agent.

    qwen-agent is located without importing it (its import pulls in many dependencies we do
    not install); only its data file is read.
    """
    how = (
        "install it with `pip install --no-deps qwen-agent` (Apache-2.0; only "
        f"qwen_agent/utils/qwen.tiktoken is used), or point ${TIKTOKEN_ENV} at a qwen.tiktoken file"
    )
    explicit = tiktoken_path or os.environ.get(TIKTOKEN_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise TokenizerError(f"Qwen rank file {path} does not exist; {how}")
        return path
    spec = importlib.util.find_spec("qwen_agent")  # a top-level lookup imports nothing
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "utils" / "qwen.tiktoken"
        if candidate.is_file():
            return candidate
    try:
        for f in importlib.metadata.distribution("qwen-agent").files or []:
            if str(f).endswith("qwen.tiktoken"):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise TokenizerError(f"cannot find Qwen's BPE rank file qwen.tiktoken; {how}")


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise TokenizerError(f"{path}:{lineno}: expected '<base64 token> <rank>', found {line[:60]!r}") from exc
    if sorted(ranks.values()) != list(range(QWEN_BASE_VOCAB)):
        raise TokenizerError(
            f"{path} holds {len(ranks)} distinct ranks; Qwen's qwen.tiktoken holds exactly {QWEN_BASE_VOCAB} "
            f"(0..{QWEN_BASE_VOCAB - 1}); use the file from the qwen-agent wheel"
        )
    if any(bytes([b]) not in ranks for b in range(256)):
        raise TokenizerError(f"{path} lacks some single-byte tokens; it is not a byte-level BPE rank file")
    return ranks


def _merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that creates each multi-byte token, in rank order.

    BPE over a token's bytes, allowing only merges ranked below the token, stops at exactly
    two parts; those two are the pair tiktoken would join last. (Listing every split whose
    halves are in the vocabulary instead would add merges Qwen never makes.)
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best_rank, best_i = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best_rank:
                    best_rank, best_i = r, i
            if best_i < 0:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) != 2:
            raise TokenizerError(f"rank {rank} ({token!r}) cannot be formed from two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def _build_qwen_json(ranks: dict[bytes, int]) -> str:
    to_char = _bytes_to_unicode()

    def visible(b: bytes) -> str:
        return "".join(to_char[x] for x in b)

    vocab = {visible(token): rank for token, rank in ranks.items()}
    merges = [(visible(a), visible(b)) for a, b in _merges_from_ranks(ranks)]
    tok = _qwen_pipeline(Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)))
    text = JinaVLMConfig.preset("jina-vlm").text
    add_jvlm_tokens(tok, QWEN3_ADDED_TOKENS, text.base_rows, text.additional_vocab_size)
    return tok.to_str()


def _cache_dir() -> Path:
    from jvlm.resolve import cache_dir

    return cache_dir() / "tokenizers"


@lru_cache(maxsize=4)
def _qwen_tokenizer_file(rank_file: str) -> Path:
    """Path of the built tokenizer.json for ``rank_file``, building it on first use.

    Kept on disk keyed by the rank file's hash, so only the first process pays the build
    (about a second or two, mostly merge recovery); later ones load the JSON.
    """
    data = Path(rank_file).read_bytes()
    name = f"qwen3-jvlm-{hashlib.sha256(data).hexdigest()[:16]}-v{_BUILD_VERSION}.json"
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / "jvlm-tokenizers"):
        if (folder / name).is_file():
            return folder / name
    start = time.perf_counter()
    built = _build_qwen_json(_read_ranks(Path(rank_file)))
    logger.info("built the Qwen tokenizer from %s in %.1f s", rank_file, time.perf_counter() - start)
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / "jvlm-tokenizers"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(built)
            os.replace(tmp, folder / name)  # atomic: a concurrent reader never sees half a file
            return folder / name
        except OSError as exc:
            logger.warning("cannot cache the tokenizer in %s (%s); trying the next location", folder, exc)
    raise TokenizerError("cannot write the built tokenizer to the cache or the temporary directory")


def build_qwen_tokenizer(tiktoken_path: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Qwen3's tokenizer plus the Jina-VLM extra tokens (151936 ``<im_start>`` ... 152063).

    Returns a fresh object on every call (callers may change it); the expensive build is cached.
    """
    rank_file = find_qwen_tiktoken(tiktoken_path).resolve()
    text = JinaVLMConfig.preset("jina-vlm").text
    return wrap_tokenizer(_qwen_tokenizer_file(str(rank_file)), text.max_sequence_length)


# -------------------------------------------------------------------------------- tiny
_TINY_CORPUS = """\
The quick brown fox jumps over the lazy dog while the children watch from the window.
A small model can describe a picture, read the text on a sign, and answer questions about a chart.
What is shown in this image? There are two cats sleeping on a red sofa next to a green plant.
The train leaves the station at seven o'clock and arrives in the city before nine.
Please count the apples on the table: three are red, four are yellow, and one is green.
She said it's raining, but we'll walk to the museum anyway because the tickets are paid.
一只小猫坐在窗台上，看着外面的雨。孩子们在公园里放风筝，天空很蓝。
这张图片里有什么？桌子上有三个红色的苹果和一杯热茶。
我们明天早上八点去火车站，然后坐车到上海参观博物馆。
请描述这张图表中的主要趋势，并回答销售额最高的是哪个月。
学习一种新的语言需要时间和耐心，但是每天练习会让你进步很快。
القطة الصغيرة تجلس بجانب النافذة وتنظر إلى المطر في الخارج.
ماذا يوجد في هذه الصورة؟ هناك رجل يقرأ كتاباً في الحديقة تحت شجرة كبيرة.
يغادر القطار المحطة في الساعة السابعة صباحاً ويصل إلى المدينة قبل الظهر.
من فضلك صف الرسم البياني وأخبرني ما هو الشهر الذي سجل أعلى المبيعات.
O gato pequeno está sentado na janela e olha para a chuva lá fora.
O que há nesta imagem? Há duas crianças brincando com uma bola na praia.
O trem sai da estação às sete horas e chega à cidade antes das nove.
Por favor, descreva o gráfico e diga qual mês teve as maiores vendas do ano.
Маленькая кошка сидит на окне и смотрит на дождь на улице.
Что изображено на этой картинке? Два мальчика играют в футбол во дворе.
Поезд отправляется со станции в семь часов и прибывает в город до девяти.
Пожалуйста, опишите диаграмму и скажите, в каком месяце были самые высокие продажи.
Küçük kedi pencerenin önünde oturuyor ve dışarıdaki yağmuru izliyor.
Bu resimde ne var? Masanın üzerinde üç kırmızı elma ve bir bardak çay var.
Tren istasyondan saat yedide kalkıyor ve dokuzdan önce şehre varıyor.
Lütfen grafiği açıklayın ve en yüksek satışın hangi ayda olduğunu söyleyin.
Numbers and code: 2024-05-17, 3.14159, 42%, x = y + 1; print("hello") # done
"""


@lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    tok = _qwen_pipeline(Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False)))
    n_bpe = TINY_BASE_VOCAB - len(_TINY_ADDED_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise TokenizerError(f"the tiny corpus yields {tok.get_vocab_size()} BPE tokens, not {n_bpe}; extend it")
    text = JinaVLMConfig.preset("tiny").text
    add_jvlm_tokens(tok, _TINY_ADDED_TOKENS, text.base_rows, text.additional_vocab_size)
    return tok.to_str()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A 1,152-id tokenizer for the ``tiny`` preset, laid out like the real one (module docstring)."""
    text = JinaVLMConfig.preset("tiny").text
    return wrap_tokenizer(Tokenizer.from_str(_tiny_tokenizer_json()), text.max_sequence_length)

