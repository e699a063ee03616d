"""Export the built-in models' verified GGUF files for the llama.cpp bench, which loads GGUF itself.

    .venv/bin/python -m bench.engine.gguf [--dest DIR] [NAME ...]     # default DIR: ~/.cache/turnout/gguf

Runs in the project venv (engine.store needs pip, packaging, rich); bench/engine/llamacpp.py then runs in
its own venv and only reads the files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine import store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=list(store.BUILTIN_MODELS))
    parser.add_argument("--dest", type=Path, default=None, help="default: $TURNOUT_HOME/gguf")
    args = parser.parse_args()
    for name in args.names:
        print(store.export_gguf(name, args.dest))


if __name__ == "__main__":
    main()
