"""``python -m jvlm_demo``: see ``jvlm_demo.demo``."""

from jvlm_demo.demo import main

raise SystemExit(main())
