"""The CONAN family's files (hate statements paired with expert counter-narratives; DIALOCONAN's dialogue turns)
-> raw rows. Decisions: data/README.md, "CONAN and HateXplain".

A pair file yields two rows per pair, the hate side and the counter-narrative side, with the derived field
`type` = HS / CN (DIALOCONAN's own column has the same name and values, so both sources declare one rule) and
each row linked to the other side's text (`RawRow.linked_text`, read by `group_split: pairs`). The file is the
row's `origin`, counted in the data card, and part of its native id.
"""

from __future__ import annotations

from pathlib import Path

from training.data.files import need, records
from training.data.sources import BadRow, RawRow, ReadResult, SourceSpec

# The pair files, told apart by their header: (hate column, counter-narrative column) -> the pair id column
# (None: the file line).
PAIR_COLUMNS = {
    ("hateSpeech", "counterSpeech"): "cn_id",  # CONAN.csv
    ("HATE_SPEECH", "COUNTER_NARRATIVE"): "INDEX",  # Multitarget-CONAN.csv
    ("hate_speech", "counter_narrative"): None,  # multitarget_KN_grounded_CN.csv
}
TURN_COLUMNS = ("text", "dialogue_id", "turn_id", "type")  # DIALOCONAN.csv


def is_english(cn_id: str) -> bool:
    """CONAN.csv: English originals (cn_id starts with EN) and English translations of the French and Italian
    pairs (cn_id ends with T1); the French and Italian originals are left out (the backbone is English)."""
    return cn_id.startswith("EN") or cn_id.endswith("T1")


def read_conan(spec: SourceSpec, folder: Path) -> ReadResult:
    result = ReadResult()
    for i, f in enumerate(spec.files):
        path = need(folder / f.path, f"source {spec.name} files[{i}].path")
        seen: set[str] = set()
        left_out = 0
        for line, rec in records(path, spec, result):
            if all(c in rec for c in TURN_COLUMNS):
                native_id = f"{rec['dialogue_id']}:{rec['turn_id']}"
                if native_id in seen:
                    result.bad.append(BadRow(str(path), line, f"duplicate turn {native_id}"))
                    continue
                seen.add(native_id)
                result.rows.append(RawRow(spec.name, native_id, rec["text"], f.split, f.subset,
                                          {"type": rec["type"]}, str(path), line, origin=path.name))
                continue
            cols = next((c for c in PAIR_COLUMNS if c[0] in rec and c[1] in rec), None)
            if cols is None:
                raise ValueError(f"source {spec.name}: {path} is neither a CONAN pair file (columns "
                                 f"{' / '.join(map(str, PAIR_COLUMNS))}) nor DIALOCONAN turns {TURN_COLUMNS} "
                                 f"(has {sorted(rec)})")
            id_column = PAIR_COLUMNS[cols]
            pair_id = rec[id_column] if id_column else str(line)
            if id_column == "cn_id" and not is_english(pair_id):
                left_out += 1
                continue
            if pair_id in seen:
                result.bad.append(BadRow(str(path), line, f"duplicate pair id {pair_id}"))
                continue
            seen.add(pair_id)
            hate, counter = rec[cols[0]], rec[cols[1]]
            for side, text, other in (("HS", hate, counter), ("CN", counter, hate)):
                result.rows.append(RawRow(spec.name, f"{path.stem}/{pair_id}/{side}", text, f.split, f.subset,
                                          {"type": side}, str(path), line, linked_text=other, origin=path.name))
        if left_out:
            result.notes.append(f"{path.name}: {left_out} French / Italian rows left out (cn_id neither starts "
                                f"with EN nor ends with T1)")
    return result
