"""Grow the built-in phrase table with generated train wordings, keeping the held-out ones pinned.

    .venv/bin/python scripts/grow_command_phrases.py [--per-intent 48] [--seed 0]

Rewrites `src/quads/resources/command_phrases.tsv` in place. The `split` column pins each intent's test and
valid wordings, so growing the table never moves a held-out wording into training. New rows are drawn from a
small grammar per intent family: verbs and synonyms, both particle orders ("turn the heat up" / "turn up the
heat"), slot placements ("the kitchen lights" / "the lights in the kitchen"), "it"/"that" forms and polite
wrappers. They are train-only. A train wording, already in the table or generated, is dropped when its core
(the wording without "please", "can you", "hey" and the like) is the core of a held-out wording. That way the
test measures wordings the model never heard, not the same wording with "please" added. Every other row is
kept. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "src" / "quads" / "resources" / "command_phrases.tsv"
COLUMNS = ("transcription", "action", "object", "location", "split")
HELD_OUT = ("test", "valid")

ROOM_WORDS = {"kitchen": ("kitchen",), "bedroom": ("bedroom",), "washroom": ("washroom", "bathroom")}
WRAPPERS = ("{}", "{} please", "please {}", "can you {}", "could you {}", "hey, {}", "would you {}",
            "{} now", "I'd like you to {}")
BARE_WRAPPERS = ("{}", "{} please", "hey, {}")
WRAPPER_WORDS = re.compile(r"^(hey|please|can you|could you|would you|i'd like you to)\s+|\s+(please|now)$")


def core(text: str) -> str:
    """A wording without case, punctuation and polite wrappers: two wordings with one core are one wording."""
    words = re.sub(r"[^a-z' ]", " ", text.lower())
    words = " ".join(words.split())
    previous = None
    while previous != words:
        previous, words = words, WRAPPER_WORDS.sub("", words).strip()
    return words


def imperative(*commands: str) -> list[str]:
    return [wrapper.format(command) for command in commands for wrapper in WRAPPERS]


def bare(*phrases: str) -> list[str]:
    return [wrapper.format(phrase) for phrase in phrases for wrapper in BARE_WRAPPERS]


def places(location: str, noun: str) -> list[tuple[str, str]]:
    """(object phrase, trailing place) pairs: "the kitchen lights" or "the lights" + " in the kitchen"."""
    if location == "none":
        return [(f"the {noun}", "")]
    pairs = []
    for room in ROOM_WORDS[location]:
        pairs += [(f"the {room} {noun}", ""), (f"the {noun}", f" in the {room}")]
    return pairs


def switch_wordings(noun_phrases: list[tuple[str, str]], on: bool) -> list[str]:
    """Lights and lamps: phrasal verbs in both orders, bare forms and wishes."""
    particle = "on" if on else "off"
    verbs = ("turn", "switch", "put") if on else ("turn", "switch", "shut", "put")
    out = []
    for obj, place in noun_phrases:
        for verb in verbs:
            out += imperative(f"{verb} {particle} {obj}{place}", f"{verb} {obj} {particle}{place}")
        bare_obj = obj.removeprefix("the ")
        out += bare(f"{bare_obj} {particle}{place}", f"{obj} {particle}{place}")
        out += [f"I want {obj} {particle}{place}", f"I'd like {obj} {particle}{place}",
                f"I need {obj} {particle}{place}"]
        if on:
            out += imperative(f"get {obj} on{place}")
        else:
            out += imperative(f"kill {obj}{place}", f"get {obj} off{place}")
    return out


def light_wordings(location: str, on: bool) -> list[str]:
    nouns = ("lights", "light", "ceiling lights", "main light") if location == "none" else ("lights", "light",
                                                                                           "ceiling lights")
    pairs = [pair for noun in nouns for pair in places(location, noun)]
    if location == "none":
        pairs += [("all the lights", ""), ("the lights", " in here"), ("the lights", " in the house")]
    else:
        pairs += [("all the lights", f" in the {room}") for room in ROOM_WORDS[location]]
    out = switch_wordings(pairs, on)
    room = "" if location == "none" else f" in the {ROOM_WORDS[location][0]}"
    out += [f"it's too dark{room}" if on else f"it's too bright{room}",
            f"it's dark{room}, lights on please" if on else f"lights out{room}"]
    if on and location != "none":
        out += [w for r in ROOM_WORDS[location] for w in imperative(f"light up the {r}")]
    return out


def lamp_wordings(on: bool) -> list[str]:
    nouns = ("lamp", "desk lamp", "reading lamp", "table lamp")
    pairs = [(f"the {noun}", "") for noun in nouns] + [("my lamp", ""), ("my desk lamp", "")]
    return switch_wordings(pairs, on)


def music_wordings(on: bool) -> list[str]:
    if on:
        music = ("music", "some music", "the music", "my music", "a song", "some songs", "my playlist",
                 "something")
        out = [w for m in music for w in imperative(f"play {m}", f"start {m}")]
        out += [w for m in ("music", "some music", "the music") for w in imperative(
            f"put on {m}", f"turn on {m}", f"switch on {m}", f"resume {m}")]
        out += imperative("turn the music on", "put the music on", "start playing music", "play a tune")
        out += bare("music on", "music please", "some music please")
        out += ["I want to hear music", "I'd like some music", "let's have some music", "let's hear some music"]
        return out
    music = ("the music", "my music", "the song", "this song", "my playlist", "the playlist")
    out = [w for m in music for w in imperative(f"stop {m}", f"pause {m}", f"turn off {m}", f"turn {m} off",
                                                   f"switch off {m}", f"switch {m} off", f"end {m}", f"kill {m}")]
    out += imperative("stop playing", "stop playing the music", "shut the music off", "silence the music")
    out += bare("music off", "no music", "no more music")
    out += ["that's enough music", "I don't want music", "enough music"]
    return out


def volume_wordings(up: bool) -> list[str]:
    particle = "up" if up else "down"
    verbs = ("increase", "raise", "boost", "bump up") if up else ("decrease", "lower", "reduce", "bring down")
    comparative = "louder" if up else "quieter"
    nouns = ("the volume", "the sound", "the music volume", "the speaker volume", "the audio", "the speakers")
    out = []
    for noun in nouns:
        verbed = () if noun == "the speakers" else tuple(f"{v} {noun}" for v in verbs)
        out += imperative(f"turn {noun} {particle}", f"turn {particle} {noun}", *verbed)
    out += imperative(f"turn that {particle}", f"turn it {particle} a bit", f"turn it {particle} a little",
                      f"make it {comparative}", f"make that {comparative}", f"make the music {comparative}",
                      f"put the volume {particle}")
    out += bare(comparative, f"a bit {comparative}", f"volume {particle}", f"sound {particle}",
                "more volume" if up else "less volume", "more sound" if up else "less sound")
    if up:
        out += ["I can't hear it", "I can't hear anything", "it's too quiet", "it's too soft", "I can barely hear it",
                "pump up the volume", "crank it up"]
    else:
        out += ["that's too loud", "it's way too loud", "keep it down", "not so loud", "the music is too loud",
                "the volume is too high"]
    return out


def heat_wordings(location: str, up: bool) -> list[str]:
    particle = "up" if up else "down"
    verbs = ("increase", "raise") if up else ("decrease", "lower", "reduce")
    comparative = "warmer" if up else "cooler"
    out = []
    for noun in ("heat", "heating", "temperature", "heater", "thermostat"):
        for obj, place in places(location, noun):
            out += imperative(f"turn {obj} {particle}{place}", f"turn {particle} {obj}{place}",
                              f"put {obj} {particle}{place}", *(f"{v} {obj}{place}" for v in verbs))
            bare_obj = obj.removeprefix("the ")
            out += bare(f"{bare_obj} {particle}{place}")
    rooms = ["the house", "the room", "it"] if location == "none" else [f"the {r}" for r in ROOM_WORDS[location]]
    here = " in here" if location == "none" else ""
    for room in rooms:
        if up:
            out += imperative(f"warm {room} up", f"warm up {room}" if room != "it" else "warm things up",
                              f"heat {room} up", f"make {room} {comparative}")
        else:
            out += imperative(f"cool {room} down", f"cool down {room}" if room != "it" else "cool things down",
                              f"make {room} {comparative}")
    places_said = [""] if location == "none" else [f" in the {r}" for r in ROOM_WORDS[location]]
    for place in places_said:
        feel = ("too cold", "freezing", "chilly", "cold") if up else ("too hot", "too warm", "boiling", "hot")
        out += [f"it's {f}{place or here}" for f in feel]
        out += bare(f"{comparative}{place}")
        if location == "none":
            out += ["I'm cold", "I'm freezing"] if up else ["I'm too hot", "I'm sweating"]
    return out


def language_wordings(language: str) -> list[str]:
    if language == "none":
        out = imperative("change the language", "switch the language", "change languages", "pick a language",
                         "choose another language", "choose a different language", "set a new language",
                         "change the system language", "switch to another language", "select a language",
                         "open the language settings", "change the language setting", "use a different language",
                         "try another language", "switch to a different language", "reset the language",
                         "go to the language menu", "change what language you speak", "set the language")
        out += bare("language", "language settings", "a different language", "another language")
        out += ["I want to change the language", "I'd like a different language", "I need another language",
                "this isn't my language", "let's use another language", "I'd like to switch languages",
                "can we change the language", "let's change the language", "the language is wrong",
                "I want a different language", "let's try another language"]
        return out
    out = imperative(f"set the language to {language}", f"change the language to {language}",
                     f"switch the language to {language}", f"switch to {language}", f"change to {language}",
                     f"use {language}", f"speak {language}", f"talk to me in {language}",
                     f"set it to {language}", f"make the language {language}", f"switch over to {language}",
                     f"change the system language to {language}", f"translate to {language}",
                     f"set {language} as the language", f"put it in {language}", f"go to {language}",
                     f"change it to {language}", f"reply in {language}", f"answer in {language}",
                     f"use the {language} language", f"switch the system to {language}",
                     f"change your language to {language}", f"switch language to {language}")
    out += bare(language, f"{language} language", f"language {language}", f"{language} mode")
    out += [f"I want {language}", f"I'd like {language}", f"I prefer {language}", f"I speak {language}",
            f"let's speak {language}", f"can we speak {language}", f"I want to use {language}",
            f"my language is {language}", f"I'd like to use {language}", f"let's switch to {language}",
            f"I only understand {language}", f"{language} is my language", f"I'd like to speak {language}",
            f"can we use {language}", f"let's use {language}", f"{language} from now on",
            f"switch everything to {language}"]
    return out


BRING_OBJECTS = {
    "juice": ("some juice", "a juice", "my juice", "the juice", "a glass of juice", "some orange juice",
              "some apple juice", "a juice box"),
    "newspaper": ("the newspaper", "the paper", "my newspaper", "today's newspaper", "the morning paper",
                  "a newspaper", "today's paper"),
    "shoes": ("my shoes", "the shoes", "a pair of shoes", "my running shoes", "my black shoes", "my work shoes"),
    "socks": ("my socks", "some socks", "a pair of socks", "some clean socks", "the socks", "my warm socks"),
}


def bring_wordings(item: str) -> list[str]:
    out = []
    for obj in BRING_OBJECTS[item]:
        out += imperative(f"bring me {obj}", f"get me {obj}", f"fetch me {obj}", f"grab me {obj}",
                          f"hand me {obj}", f"go get {obj}", f"bring {obj}", f"fetch {obj}",
                          f"bring {obj} to me", f"go and get {obj}")
        out += bare(obj)
        out += [f"I need {obj}", f"I want {obj}", f"I'd like {obj}", f"can I have {obj}", f"can I get {obj}",
                f"where is {obj}" if not obj.endswith("s") else f"where are {obj}"]
    return out


def candidates(action: str, obj: str, location: str) -> list[str]:
    """Every generated wording of one FSC intent."""
    if obj == "lights":
        return light_wordings(location, action == "activate")
    if obj == "lamp":
        return lamp_wordings(action == "activate")
    if obj == "music":
        return music_wordings(action == "activate")
    if obj == "volume":
        return volume_wordings(action == "increase")
    if obj == "heat":
        return heat_wordings(location, action == "increase")
    if action == "change language":
        return language_wordings(obj)
    if action == "bring":
        return bring_wordings(obj)
    raise ValueError(f"no grammar for intent {action}_{obj}_{location}")


def sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def drop_wrapped_held_out(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows less the train ones whose core is a held-out wording's ("Please X" where "X" is held out)."""
    held_out = {core(r["transcription"]) for r in rows if r.get("split") in HELD_OUT}
    return [r for r in rows if r.get("split") in HELD_OUT or core(r["transcription"]) not in held_out]


def grow(rows: list[dict[str, str]], per_intent: int, seed: int) -> list[dict[str, str]]:
    """The table's rows, less train rows that only wrap a held-out wording, plus generated train rows up to
    `per_intent` wordings per intent."""
    rows = drop_wrapped_held_out(rows)
    intents = list(dict.fromkeys((r["action"], r["object"], r["location"]) for r in rows))
    taken = {core(r["transcription"]) for r in rows}  # the held-out cores too: no generated row may say one
    out = list(rows)
    for intent in intents:
        have = sum(1 for r in rows if (r["action"], r["object"], r["location"]) == intent)
        pool = sorted({sentence(text) for text in candidates(*intent)})
        pool = [text for text in pool if core(text) not in taken]
        rng = random.Random(f"quads-grow-{seed}-{'_'.join(intent)}")
        chosen = []
        for text in rng.sample(pool, len(pool)):
            if len(chosen) >= per_intent - have:
                break
            if core(text) in taken:
                continue
            taken.add(core(text))
            chosen.append(text)
        if have + len(chosen) < per_intent:
            raise SystemExit(f"{'_'.join(intent)}: only {have + len(chosen)} wordings, asked for {per_intent}")
        out += [dict(zip(COLUMNS, (text, *intent, "train"), strict=True)) for text in chosen]
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line.strip()]
    for row in rows:
        row.setdefault("split", "train")
    return rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    order = {intent: n for n, intent in enumerate(dict.fromkeys((r["action"], r["object"], r["location"])
                                                                 for r in rows))}
    rows = sorted(rows, key=lambda r: order[(r["action"], r["object"], r["location"])])
    text = "\t".join(COLUMNS) + "\n" + "".join("\t".join(r[c] for c in COLUMNS) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-intent", type=int, default=48, help="wordings per intent after growing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, default=TABLE)
    args = parser.parse_args()
    rows = read_rows(args.table)
    grown = grow(rows, args.per_intent, args.seed)
    dropped = len(rows) - len(drop_wrapped_held_out(rows))
    write_rows(args.table, grown)
    counts = set(collections.Counter((r["action"], r["object"], r["location"]) for r in grown).values())
    print(f"{args.table}: {len(rows)} -> {len(grown)} rows ({dropped} train rows dropped: a held-out wording wrapped); "
          f"wordings per intent: {sorted(counts)}")


if __name__ == "__main__":
    main()
