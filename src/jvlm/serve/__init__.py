"""The OpenAI-compatible server: ``protocol`` (wire schemas), ``fetch`` (safe image download),
``chat`` (requests to engine requests and back), ``worker`` (the thread that owns the model),
``metrics`` (Prometheus) and ``app`` (routes, limits, streaming, errors).

``create_app`` and ``ServerConfig`` are imported lazily so that importing the schemas does
not pull in FastAPI or torch.
"""

from __future__ import annotations

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str):
    if name in __all__:
        from jvlm.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'jvlm.serve' has no attribute {name!r}")
