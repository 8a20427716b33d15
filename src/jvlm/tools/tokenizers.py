"""Build-time tokenizer tooling: the tokenizers the project builds rather than loads.

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

Runtime code never imports this module (``tests/test_architecture.py`` checks): a model folder
carries its ``tokenizer.json``, which ``jvlm.processing.text.load_tokenizer`` reads. Built
Qwen tokenizers are cached under ``jvlm.paths.cache_dir()``.
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
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers
from transformers import PreTrainedTokenizerFast

from jvlm.config import JinaVLMConfig
from jvlm.errors import TokenizerError
from jvlm.paths import cache_dir
from jvlm.processing.text import (
    DEFAULT_CHAT_TEMPLATE,
    ENDOFTEXT,
    QWEN3_ADDED_TOKENS,
    STRUCTURAL_TOKENS,
    extra_token_names,
)

logger = logging.getLogger(__name__)

# Qwen2/Qwen3 pre-tokenizer: contractions, letter runs with one leading non-letter, single
# digits, punctuation runs, newlines, and whitespace that does not swallow the next word's space.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN_BASE_VOCAB = 151_643  # BPE ranks in qwen.tiktoken; 151643 is <|endoftext|>
TINY_BASE_VOCAB = 1024
_TINY_ADDED_TOKENS = (("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True))
TIKTOKEN_ENV = "JVLM_QWEN_TIKTOKEN"
_BUILD_VERSION = 1  # bump when the built tokenizer.json would change; invalidates the disk cache


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
