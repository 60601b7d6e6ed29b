"""The converter process: `python -I -m llmos.documents.child`, run inside the tool sandbox.

It reads one request from standard input (a JSON header line, then the document's bytes),
converts, and writes one JSON answer to standard output: {"units": [...], "cut": bool} or
{"error": {"code": ..., "message": ...}}. It opens no file of the person's: the parent read
the file through the workspace and hands over only its bytes, and the walls let this process
read nothing but Python and its libraries and write nothing but its private temp folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any


def main() -> int:
    """Convert the document on stdin; the answer on stdout; exit 0 unless the protocol broke."""
    stdin = sys.stdin.buffer
    header: dict[str, Any] = json.loads(stdin.readline())
    data = stdin.read()
    from llmos.documents.convert import ConvertError, Limits, convert

    limits = Limits(max_chars=int(header["max_chars"]), ocr_pages=int(header["ocr_pages"]))
    try:
        units = convert(
            str(header["kind"]),
            data,
            limits,
            int(header["max_unzipped"]),
            int(header["max_entries"]),
        )
        answer: dict[str, Any] = {"units": [asdict(unit) for unit in units]}
        answer["cut"] = sum(len(unit.text) for unit in units) >= limits.max_chars
    except ConvertError as exc:
        answer = {"error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        answer = {"error": {"code": "E_TOOBIG", "message": "converting it ran out of memory"}}
    except RecursionError:
        answer = {"error": {"code": "E_INVAL", "message": "the file nests too deeply to read"}}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
