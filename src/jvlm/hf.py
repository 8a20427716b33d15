"""Moved to ``jvlm.integrations.transformers``; this name stays for existing imports."""

from jvlm.integrations.transformers import *  # noqa: F401,F403
from jvlm.integrations.transformers import register  # noqa: F401
