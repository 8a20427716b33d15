#!/usr/bin/env python
"""Ask Jina-VLM about images from the command line (forwards to ``jvlm infer``).

Kept at the repository root for people following the published instructions:

    python infer.py -i image.jpg -p "Describe this image"
    python infer.py -i a.jpg -i b.jpg -p "Compare these images"
    python infer.py -i image.jpg -p "What is in this image?" --stream
    python infer.py -p "What is the capital of France?"

Run ``python infer.py --help`` for every option.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    src = Path(__file__).resolve().parent / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))  # a checkout that was not pip-installed
    from jvlm.cli import main

    sys.exit(main(["infer", *sys.argv[1:]]))
