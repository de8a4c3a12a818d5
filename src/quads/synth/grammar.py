"""Phrase tables: what the synthetic speakers say, and the intent label each phrasing carries.

A phrase table is a TSV with a header, in one of two schemas:
  - FSC: `transcription  action  object  location`; the intent is `action_object_location`, as in FSC.
  - intent: `transcription  intent` plus optional slot columns (kept in the table, not used for the label).
An optional `split` column (train, valid or test) pins a phrasing to a split: test and valid phrasings are
spoken only by their split's voices (`quads.synth.corpus.split_phrasings`), so test measures unseen wordings.
The built-in table (`resources/command_phrases.tsv`) is our own set of home-assistant commands in FSC's
31-intent label schema, several phrasings per intent, so a model must listen to the content words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from quads.data.corpus import SPLITS
from quads.data.fsc import SLOT_COLUMNS
from quads.errors import DataError

FSC_SCHEMA = "fsc"
INTENT_SCHEMA = "intent"
BUILTIN_TABLE = "command_phrases.tsv"


@dataclass(frozen=True)
class Phrase:
    """One phrasing of one intent; `slots` holds the table's other columns (FSC: action, object, location)."""

    transcription: str
    intent: str
    slots: dict[str, str] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class PhraseTable:
    """The phrasings of every intent, in table order; `schema` decides the CSV columns of the corpus."""

    phrases: tuple[Phrase, ...]
    schema: str
    columns: tuple[str, ...]
    source: str = "<memory>"

    @property
    def intents(self) -> list[str]:
        """Intent labels in order of first appearance."""
        return list(dict.fromkeys(phrase.intent for phrase in self.phrases))

    def by_intent(self) -> dict[str, list[Phrase]]:
        grouped: dict[str, list[Phrase]] = {}
        for phrase in self.phrases:
            grouped.setdefault(phrase.intent, []).append(phrase)
        return grouped

    def to_tsv(self) -> str:
        """The table as TSV text with its header; `parse_phrase_table(to_tsv())` gives the same table."""
        lines = ["\t".join(self.columns)]
        for phrase in self.phrases:
            values = {"transcription": phrase.transcription, "intent": phrase.intent, **phrase.slots}
            lines.append("\t".join(_one_line(values.get(column, "")) for column in self.columns))
        return "\n".join(lines) + "\n"

    def fingerprint(self) -> str:
        """A hash of the table's content: two corpora from the same table and settings are the same corpus."""
        return hashlib.sha256(self.to_tsv().encode("utf-8")).hexdigest()[:16]


def fsc_intent(action: str, obj: str, location: str) -> str:
    """FSC's intent label: the slot values joined with underscores (e.g. `change language_German_none`)."""
    return f"{action}_{obj}_{location}"


def parse_phrase_table(text: str, source: str = "<text>") -> PhraseTable:
    """Parse TSV text in either schema; every problem is reported as `source:line: what is wrong`."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{source}:1: empty phrase table; expected a header `transcription<TAB>intent` "
                        f"or `transcription<TAB>action<TAB>object<TAB>location`")
    columns = tuple(name.strip() for name in lines[0].lstrip("\ufeff").split("\t"))
    schema = _detect_schema(columns, source)
    phrases: list[Phrase] = []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = [value.strip() for value in line.split("\t")]
        if len(values) != len(columns):
            raise DataError(f"{source}:{line_number}: expected {len(columns)} tab-separated columns "
                            f"({', '.join(columns)}), found {len(values)}")
        row = dict(zip(columns, values, strict=True))
        empty = [name for name in columns if not row[name]]
        if empty:
            raise DataError(f"{source}:{line_number}: empty value in column {empty[0]!r}")
        if row.get("split", "train") not in SPLITS:
            raise DataError(f"{source}:{line_number}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        transcription = row.pop("transcription")
        if schema == FSC_SCHEMA:
            intent = fsc_intent(row["action"], row["object"], row["location"])
        else:
            intent = row.pop("intent")
        phrases.append(Phrase(transcription=transcription, intent=intent, slots=row))
    if not phrases:
        raise DataError(f"{source}:2: the phrase table has a header but no phrases")
    return PhraseTable(phrases=tuple(phrases), schema=schema, columns=columns, source=source)


def load_phrase_table(path: str | Path) -> PhraseTable:
    """Read a phrase table TSV file (UTF-8)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: phrase table not found") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the phrase table ({error.strerror})") from None
    return parse_phrase_table(text, source=str(path))


def builtin_phrase_table() -> PhraseTable:
    """The built-in home-assistant command table: FSC's 31 intents, several phrasings each, written for quads."""
    text = (resources.files("quads") / "resources" / BUILTIN_TABLE).read_text(encoding="utf-8")
    return parse_phrase_table(text, source=f"quads/resources/{BUILTIN_TABLE}")


def _detect_schema(columns: tuple[str, ...], source: str) -> str:
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise DataError(f"{source}:1: column {duplicated[0]!r} appears twice in the header")
    if "transcription" not in columns:
        raise DataError(f"{source}:1: the header has no `transcription` column (found: {', '.join(columns)})")
    if "intent" in columns:
        return INTENT_SCHEMA
    missing = [slot for slot in SLOT_COLUMNS if slot not in columns]
    if missing:
        raise DataError(f"{source}:1: the header needs either an `intent` column or all of "
                        f"`action`, `object`, `location` (missing: {', '.join(missing)})")
    return FSC_SCHEMA


def _one_line(value: str) -> str:
    """Tabs and newlines would break the TSV row; a transcription never needs them."""
    return " ".join(str(value).split())
