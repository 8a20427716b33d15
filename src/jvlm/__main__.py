import sys

from jvlm.cli import main

sys.exit(main())
