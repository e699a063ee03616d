"""The one loop that reads a user's JSONL file: prompt files, outcome data, AlpacaEval judgements.

Every reader skips blank lines and reports a line that does not parse as `FILE:LINE: not valid JSON (why)`,
so a user sees the same message whichever command read the file; each reader then checks the values
for the fields it needs. The gateway's `turnout router label` reads its prompts through here too
(router_models.cli.read_prompt_records): this package sits below the gateway and may not import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line, read as it goes; ValueError for a line that
    is not JSON. Opening and decoding errors (OSError, UnicodeDecodeError) are the caller's to word."""
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            yield line_no, value
