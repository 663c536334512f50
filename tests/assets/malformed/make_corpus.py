"""Regenerate the malformed-input corpus: python tests/assets/malformed/make_corpus.py"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def good(i: int) -> str:
    return json.dumps({"instruction": "Is it even?", "input": str(i), "output": "even" if i % 2 == 0 else "odd"})


def main() -> None:
    (HERE / "truncated_line.jsonl").write_text(
        "\n".join([good(i) for i in range(1, 20)] + ['{"instruction": "Is it even?", "inp'] + [good(i) for i in range(20, 40)]) + "\n"
    )
    (HERE / "bom_crlf.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(good(i).encode() for i in range(10)) + b"\r\n")
    rows = [good(i).encode() for i in range(30)]
    rows[4] = b'{"instruction": "Is it even?", "input": "\xff\xfe", "output": "odd"}'
    (HERE / "non_utf8.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    text_rows = [good(i) for i in range(40)]
    text_rows[2] = json.dumps({"instruction": ["a list"], "output": "odd"})
    text_rows[6] = json.dumps({"instruction": "Is it even?", "output": 7})
    (HERE / "wrong_types.jsonl").write_text("\n".join(text_rows) + "\n")
    text_rows = [good(i) for i in range(40)]
    text_rows[1] = json.dumps({"instruction": "Is it even?"})
    text_rows[8] = json.dumps({"instruction": "  ", "output": "odd"})
    (HERE / "missing_fields.jsonl").write_text("\n".join(text_rows) + "\n")
    (HERE / "empty.jsonl").write_text("")
    (HERE / "all_bad.jsonl").write_text('not json\n{"output": 1}\n[]\n')
    (HERE / "schema_a.jsonl").write_text("\n".join(good(i) for i in range(20)) + "\n")
    (HERE / "schema_b.jsonl").write_text(
        "\n".join(json.dumps({"prompt": "Is it even?", "completion": "odd", "id": i}) for i in range(5)) + "\n"
    )
    text_rows = [good(i) for i in range(20)]
    text_rows[10] = json.dumps({"instruction": "Repeat: " + "word " * 5000, "output": "word"})
    (HERE / "huge_row.jsonl").write_text("\n".join(text_rows) + "\n")


if __name__ == "__main__":
    main()
