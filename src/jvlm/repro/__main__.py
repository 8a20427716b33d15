"""``python -m jvlm.repro``: see ``jvlm.repro``."""

from jvlm.repro import main

raise SystemExit(main())
