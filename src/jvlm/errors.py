"""Typed errors. Each says what was expected, what was found, and what to do.

Every error a user can cause derives from ``JVLMError`` so the CLI and the server can
turn it into one clear line or an OpenAI-shaped error object without a traceback.
"""

from __future__ import annotations

import re

#: ``<_io.BytesIO object at 0x7f...>``: what some libraries put in their messages; an address
#: means nothing to a user and tells an attacker about the process
_OBJECT_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>")


def public_message(text: str) -> str:
    """An error text fit to show a user: Python object reprs become a plain description."""
    return _OBJECT_REPR.sub(lambda m: "(in-memory data)" if "IO" in m.group(1) else f"({m.group(1)})", text)


class JVLMError(Exception):
    """Base class of every error a user can trigger."""

    #: short machine-readable code (used by the server's error object)
    code: str = "jvlm_error"


class InvalidImageError(JVLMError, ValueError):
    """The input is not a decodable image (not an image, truncated, zero-size, unknown type)."""

    code = "invalid_image"


class ImageTooLargeError(InvalidImageError):
    """The image header announces more pixels than the configured cap (checked before decoding)."""

    code = "image_too_large"


class ModelFolderError(JVLMError, FileNotFoundError):
    """A model folder is missing, incomplete, or holds files we refuse to read."""

    code = "model_not_found"


class CheckpointError(JVLMError, ValueError):
    """A checkpoint's tensors do not match the model: missing, unexpected or mis-shaped keys."""

    code = "checkpoint_mismatch"


class TokenizerError(JVLMError, ValueError):
    """The tokenizer lacks a required special token, or a token does not encode to one id."""

    code = "tokenizer_error"


class ContextLengthError(JVLMError, ValueError):
    """Prompt + image tokens + requested new tokens exceed the model's context."""

    code = "context_length_exceeded"


class PromptError(JVLMError, ValueError):
    """The prompt and the images disagree (e.g. placeholder count differs from image count)."""

    code = "invalid_prompt"


class BenchmarkError(JVLMError, ValueError):
    """A benchmark file cannot be read: unknown benchmark, missing file, malformed record or image."""

    code = "benchmark_error"


class TrainConfigError(JVLMError, ValueError):
    """A training config is invalid: unknown key, impossible batch split, missing section."""

    code = "train_config_error"


class TrainDataError(JVLMError, ValueError):
    """Training data cannot be used at all (missing file, a source with no usable rows)."""

    code = "train_data_error"


class UsageError(JVLMError, ValueError):
    """A command-line setting is impossible (a port out of range, a device that is not there)."""

    code = "invalid_argument"


class EndpointError(JVLMError, ConnectionError):
    """An OpenAI-compatible endpoint could not be reached, or failed in a way a retry may fix."""

    code = "endpoint_error"


def describe_unexpected(err: BaseException) -> str:
    """One line for an error that is not a ``JVLMError``: what happened and what to do."""
    name = type(err).__name__
    if isinstance(err, ModuleNotFoundError) and err.name:
        package = err.name.split(".")[0]
        return (f"the Python package {package!r} is needed for this and is not installed; "
                f"install it with: pip install {package}")
    if name in ("DecompressionBombError", "DecompressionBombWarning"):
        return f"the image is too large to decode safely: {public_message(str(err))}"
    if isinstance(err, MemoryError) or name == "OutOfMemoryError":
        return "ran out of memory; use a smaller input, fewer images or max_crops, or a smaller batch"
    if isinstance(err, OSError) and err.strerror and getattr(err, "filename", None):
        return f"{err.filename}: {err.strerror}"
    text = public_message(str(err)).strip().splitlines()
    return f"{text[0] if text else name} ({name}; run with -v for the traceback)"


def run_reporting_errors(prog: str, run, error_code: int = 1, verbose: bool = False) -> int:
    """``run()``'s exit code; after any error, one ``prog: error: ...`` line and
    ``error_code``; after Ctrl-C, ``interrupted`` and 130. No traceback either way, unless
    ``verbose`` (``jvlm -v``) asks for it on an error that is not a ``JVLMError``.

    Shared by the ``jvlm`` command and the ``python -m`` entry points outside it, so every
    subcommand, present and future, reports the same way."""
    import sys

    try:
        return int(run() or 0)
    except JVLMError as err:
        print(f"{prog}: error: {public_message(str(err))}", file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a user never sees a traceback
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"{prog}: error: {describe_unexpected(err)}", file=sys.stderr)
        return error_code
