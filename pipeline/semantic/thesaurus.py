"""Synonyms and antonyms for the word-swap guard, distilled from WordNet 3.0 into a small table.

    python -m pipeline.semantic.thesaurus [--wordnet /usr/share/wordnet] [--out data/thesaurus.json.gz]

The swap guard refuses a near-identical question with one word changed (`delivery address` vs
`billing address`), but `buy` / `purchase` or `dispute` / `challenge` change nothing. Two words are
*synonyms* here when one of their three most frequent WordNet senses is shared, or (verbs and
adjectives only) one sense is the other's direct hypernym or similar-to sense (`locate` is a kind
of `find`). Nouns never match through a hypernym: `rice` and `quinoa` are both grains, not one
thing. Antonyms (WordNet's `!` pointers: `increase` / `decrease`, `include` / `exclude`) are kept
so the guard can name them. Only words of MiniLM's vocabulary or their stems (and two-word collocations
of them, `sign up`) are kept: a few hundred KB, read once. WordNet (Princeton, a BSD-style licence) comes
from Debian's `wordnet-base`; the router never needs it, only this builder does.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from pipeline.semantic.embedders import DATA_DIR

THESAURUS_FILE = DATA_DIR / "thesaurus.json.gz"
TOP_SENSES = 3
_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def _read_data(root: Path) -> tuple[dict[str, list[str]], dict[str, set[str]], set[tuple[str, str]]]:
    """synset id -> member words; synset id -> broader synsets (verb hypernym, adj similar-to);
    antonym word pairs."""
    members: dict[str, list[str]] = {}
    broader: dict[str, set[str]] = defaultdict(set)
    antonyms: set[tuple[str, str]] = set()
    pointers: list[tuple[str, int, str, int]] = []
    for pos, tag in _POS.items():
        for line in (root / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue  # licence header
            f = line.split(" | ")[0].split()
            sid, n = f"{tag}{f[0]}", int(f[3], 16)
            members[sid] = [f[4 + 2 * i].casefold().split("(")[0] for i in range(n)]
            k = 4 + 2 * n
            for _ in range(int(f[k])):
                symbol, target, tpos, st = f[k + 1:k + 5]
                k += 4
                tid = f"{'a' if tpos == 's' else tpos}{target}"
                if symbol in ("@", "&") and tag in "va":
                    broader[sid].add(tid)
                elif symbol == "!":
                    pointers.append((sid, int(st[:2], 16) - 1, tid, int(st[2:], 16) - 1))
    for sid, i, tid, j in pointers:
        if sid in members and tid in members:
            x, y = members[sid][i], members[tid][j]
            antonyms.add((min(x, y), max(x, y)))
    return members, broader, antonyms


def _senses(root: Path) -> dict[str, list[str]]:
    """word -> its synset ids, most frequent sense first (WordNet's index order)."""
    out: dict[str, list[str]] = defaultdict(list)
    for pos, tag in _POS.items():
        for line in (root / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue
            f = line.split()
            count = int(f[2])
            out[f[0]] += [f"{tag}{o}" for o in f[-count:][:TOP_SENSES]]
    return out


def build(root: Path, vocabulary: frozenset[str]) -> dict[str, object]:
    _, broader, antonyms = _read_data(root)
    senses = _senses(root)

    def known(part: str) -> bool:  # MiniLM knows the word or an inflected form (`deleted`)
        return (len(part) <= 2 and part.isalpha()) or any(
            part + ending in vocabulary for ending in ("", "s", "es", "d", "ed", "ing"))

    def kept(word: str) -> bool:
        parts = word.split("_")
        return len(parts) <= 2 and all(known(p) for p in parts)

    words = sorted(w for w in senses if kept(w))
    ids: dict[str, int] = {}
    table: dict[str, list[list[int]]] = {}
    for w in words:
        own = senses[w]
        wide = sorted({b for s in own for b in broader.get(s, ())})
        table[w] = [[ids.setdefault(s, len(ids)) for s in own], [ids.setdefault(s, len(ids)) for s in wide]]
    pairs = sorted([x, y] for x, y in antonyms if kept(x) and kept(y))
    forms = {}  # irregular forms: bought -> buy, mice -> mouse
    for pos in _POS:
        for line in (root / f"{pos}.exc").read_text(encoding="latin-1").splitlines():
            form, *bases = line.split()
            if form.isalpha() and bases and bases[0] in table:
                forms.setdefault(form, bases[0])
    return {"source": "WordNet 3.0 (Princeton), Debian wordnet-base", "top_senses": TOP_SENSES,
            "words": table, "antonyms": pairs, "forms": forms}


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, tuple[frozenset[int], frozenset[int]]], frozenset[tuple[str, str]],
                      dict[str, str]]:
    if not THESAURUS_FILE.exists():
        return {}, frozenset(), {}
    data = json.loads(gzip.decompress(THESAURUS_FILE.read_bytes()))
    words = {w: (frozenset(own), frozenset(wide)) for w, (own, wide) in data["words"].items()}
    return words, frozenset((x, y) for x, y in data["antonyms"]), data["forms"]


def _lemmas(word: str) -> list[str]:
    """Dictionary forms a word may have: `purchased` -> purchase, `quickest` -> quick."""
    w = word.casefold().replace(" ", "_")
    out = [w, _table()[2][w]] if w in _table()[2] else [w]
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""),
                         ("ing", "e"), ("est", ""), ("er", ""), ("iest", "y"), ("ier", "y")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            out.append(w[: -len(suffix)] + repl)
    if len(w) > 4 and w[-1] == w[-2]:  # stopped -> stopp -> stop
        out += [w[:-1]]
    return out


def _entries(word: str) -> list[tuple[frozenset[int], frozenset[int]]]:
    words = _table()[0]
    return [words[lemma] for lemma in _lemmas(word) if lemma in words]


@lru_cache(maxsize=65_536)
def synonyms(x: str, y: str) -> bool:
    """One sense in common, or one a verb/adjective sense directly broader than the other's."""
    if antonyms(x, y):
        return False
    for own_x, wide_x in _entries(x):
        for own_y, wide_y in _entries(y):
            if own_x & own_y or own_x & wide_y or wide_x & own_y:
                return True
    return False


@lru_cache(maxsize=65_536)
def antonyms(x: str, y: str) -> bool:
    pairs = _table()[1]
    return any((min(a, b), max(a, b)) in pairs for a in _lemmas(x) for b in _lemmas(y))


def main(argv: list[str] | None = None) -> int:
    from pipeline.semantic.guards import vocabulary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=THESAURUS_FILE)
    args = parser.parse_args(argv)
    data = build(args.wordnet, vocabulary())
    args.out.write_bytes(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))
    print(f"{args.out}: {len(data['words'])} words, {len(data['antonyms'])} antonym pairs, "
          f"{args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
