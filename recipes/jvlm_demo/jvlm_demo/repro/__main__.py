"""``python -m jvlm_demo.repro``: see ``jvlm_demo.repro``."""

from jvlm_demo.repro import main

raise SystemExit(main())
