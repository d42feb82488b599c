"""atlas-build-corpus: build the embedded multilingual corpus from the gettext catalogs of a Debian machine.

The corpus is human-translated text: the `msgstr` translations in the compiled message catalogs
under /usr/share/locale/*/LC_MESSAGES/*.mo (English is taken from the catalogs' `msgid` source
strings). It is written in the public MADLAD-400 "clean" layout so that one loader
(`atlas_t5x.data.madlad`) serves both this corpus and the real data set:

    atlas_t5x/data/corpus/{lang}/{lang}_clean_0000.jsonl.gz     one JSON object per line, field "text"
    atlas_t5x/data/corpus/MANIFEST.json                         packages, licenses, sha256 of every file

Choices, all [our choice]:
  * Sources. Only packages in SOURCE_PACKAGES are read, each with its license checked against its
    /usr/share/doc/<pkg>/copyright. Permissive packages (PostgreSQL, MIT/X-style) are used for
    every language; weak-copyleft (LGPL) library catalogs are added only for a language whose
    permissive text is below MIN_PERMISSIVE_BYTES (e.g. hi, mr, bg, ca have no PostgreSQL
    translation). GPL-only packages are never used. The license of every input is in the manifest.
  * Messages. Header entries (empty msgid), untranslated entries (empty msgstr or msgstr equal to
    msgid), and format-only strings (no letter left after removing printf conversions) are
    skipped; only the first form of a plural entry is kept; every message is stripped and exact
    duplicates within a language are dropped (so unique-token counts are honest).
  * Documents. Within a language, catalogs are read in sorted order (tier, package, domain,
    locale) and their messages, in catalog order, are grouped into documents of consecutive
    messages joined by newlines, closed once a document reaches DOC_TARGET_BYTES of UTF-8.
  * Codes. Locale directories map to MADLAD-400 codes through LOCALE_DIRS: pt_BR and pt both
    become `pt` (MADLAD has one Portuguese); zh_CN becomes `zh` (Simplified Han only, so zh_TW,
    zh_HK and zh_Hant are not used); regional or script variants not listed (ca@valencia,
    sr@latin, en_GB, ...) are not used.
  * Reproducibility. Output files are gzip with mtime 0 and no file name, rows written with
    sorted keys, so the same inputs give byte-identical files; `--check` rebuilds into a temporary
    folder and compares every sha256 with the committed manifest.

Run:  atlas-build-corpus [--out atlas_t5x/data/corpus] [--check]
(`python scripts/build_corpus.py ...` is the same command; it needs no training stack.)
"""

from __future__ import annotations

import collections
import dataclasses
import gettext
import glob
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from atlas_t5x import languages
from atlas_t5x.cli import common

COMMAND = "atlas-build-corpus"
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "corpus")
LOCALE_ROOT = "/usr/share/locale"

DOC_TARGET_BYTES = 512            # a document closes once it holds this many UTF-8 bytes
MIN_PERMISSIVE_BYTES = 150_000    # below this, a language also draws on the LGPL tier
MAX_LANGUAGE_BYTES = 1_000_000    # hard cap per language (keeps the committed corpus compact)

PERMISSIVE, WEAK_COPYLEFT = "permissive", "weak-copyleft"


@dataclasses.dataclass(frozen=True)
class SourcePackage:
    license: str     # SPDX-style name recorded in the manifest
    tier: str        # PERMISSIVE or WEAK_COPYLEFT
    evidence: str    # a string that must occur in /usr/share/doc/<pkg>/copyright


SOURCE_PACKAGES: dict[str, SourcePackage] = {
    "libpq5": SourcePackage("PostgreSQL", PERMISSIVE, "License: PostgreSQL"),
    "postgresql-15": SourcePackage("PostgreSQL", PERMISSIVE, "License: PostgreSQL"),
    "postgresql-client-15": SourcePackage("PostgreSQL", PERMISSIVE, "License: PostgreSQL"),
    "xkb-data": SourcePackage("HPND", PERMISSIVE,
                              "Permission to use, copy, modify, distribute, and sell"),
    "krb5-locales": SourcePackage("MIT", PERMISSIVE,
                                  "Redistribution and use in source and binary forms"),
    "at-spi2-common": SourcePackage("LGPL-2+", WEAK_COPYLEFT, "License: LGPL-2+"),
    "gsettings-desktop-schemas": SourcePackage("LGPL-2.1+", WEAK_COPYLEFT, "License: LGPL-2.1+"),
    "libgdk-pixbuf2.0-common": SourcePackage("LGPL-2+", WEAK_COPYLEFT, "License: LGPL-2+"),
    "libglib2.0-data": SourcePackage("LGPL-2.1+", WEAK_COPYLEFT, "LGPL-2.1+"),
    "libgstreamer1.0-0": SourcePackage("LGPL-2+", WEAK_COPYLEFT, "License: LGPL-2+"),
    "libgtk2.0-common": SourcePackage("LGPL-2+", WEAK_COPYLEFT, "GNU Lesser General Public"),
}

# MADLAD-400 code -> locale directories whose translations it takes, and its ISO 15924 script.
LOCALE_DIRS: dict[str, tuple[str, ...]] = {
    "de": ("de",), "es": ("es",), "fr": ("fr",), "it": ("it",), "pt": ("pt_BR", "pt"),
    "ca": ("ca",), "ru": ("ru",), "uk": ("uk",), "bg": ("bg",), "el": ("el",),
    "zh": ("zh_CN",), "ja": ("ja",), "ko": ("ko",), "hi": ("hi",), "mr": ("mr",),
    "cy": ("cy",), "yi": ("yi",),
}
ENGLISH = "en"   # built from the msgid source strings of the permissive catalogs

_PRINTF = re.compile(
    r"%(\d+\$)?[-+ #0']*(\*|\d+)?(\.(\*|\d+))?(hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGaAcspnm%]"
    r"|%<PRI[a-zA-Z0-9]+>")


class BuildError(Exception):
    """Bad input or environment; the CLI exits with code 2."""


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def is_format_only(text: str) -> bool:
    """True if nothing alphabetic is left once printf conversions are removed."""
    return not any(ch.isalpha() for ch in _PRINTF.sub("", text))


def read_catalog(path: str) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled catalog, in catalog order, plural form 0 only."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # pylint: disable=protected-access
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as err:
        raise BuildError(f"{path}: not a readable gettext catalog: {err}") from err
    pairs = []
    for key, msgstr in catalog.items():
        if isinstance(key, tuple):
            key, form = key
            if form != 0:
                continue
        pairs.append((key.split("\x04")[-1], msgstr))   # drop a msgctxt prefix
    return pairs


def owning_packages(paths: list[str]) -> dict[str, str]:
    """Maps each path to its Debian binary package with one `dpkg -S` call."""
    if not paths:
        return {}
    out = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True, check=False)
    owners = {}
    for line in out.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        owners[path.strip()] = pkg.split(":")[0].split(",")[0].strip()
    return owners


def package_info(pkg: str) -> dict:
    """Version, source package and license (checked against the copyright file) of a package."""
    spec = SOURCE_PACKAGES[pkg]
    copyright_path = f"/usr/share/doc/{pkg}/copyright"
    try:
        with open(copyright_path, encoding="utf-8", errors="replace") as f:
            copyright_text = f.read()
    except OSError as err:
        raise BuildError(f"{pkg}: cannot read {copyright_path}: {err}") from err
    if spec.evidence not in copyright_text:
        raise BuildError(f"{pkg}: {copyright_path} does not state {spec.evidence!r}; "
                         f"its license may have changed from {spec.license}")
    query = subprocess.run(["dpkg-query", "-W", "-f=${source:Package}\t${Version}", pkg],
                           capture_output=True, text=True, check=False)
    if query.returncode != 0:
        raise BuildError(f"{pkg}: dpkg-query failed: {query.stderr.strip()}")
    source, version = query.stdout.split("\t")
    return {"license": spec.license, "tier": spec.tier, "source_package": source,
            "version": version, "copyright_file": copyright_path,
            "copyright_sha256": hashlib.sha256(copyright_text.encode()).hexdigest()}


def find_catalogs(locale_dirs: tuple[str, ...], owners: dict[str, str]) -> list[dict]:
    """Catalogs of the allowed packages under the given locale directories, sorted."""
    found = []
    for locale in locale_dirs:
        for path in sorted(glob.glob(f"{LOCALE_ROOT}/{locale}/LC_MESSAGES/*.mo")):
            pkg = owners.get(path)
            if pkg in SOURCE_PACKAGES:
                found.append({"path": path, "package": pkg, "locale": locale,
                              "domain": os.path.basename(path)[:-3],
                              "tier": SOURCE_PACKAGES[pkg].tier})
    tier_rank = {PERMISSIVE: 0, WEAK_COPYLEFT: 1}
    return sorted(found, key=lambda c: (tier_rank[c["tier"]], c["package"], c["domain"], c["locale"]))


def translated_messages(pairs: list[tuple[str, str]], source_side: bool) -> list[str]:
    """Usable texts of a catalog: translations, or the English msgids when source_side."""
    texts = []
    for msgid, msgstr in pairs:
        if not msgid or not msgstr or msgstr == msgid:
            continue
        text = (msgid if source_side else msgstr).strip()
        if text and not is_format_only(text):
            texts.append(text)
    return texts


def group_documents(messages: list[str]) -> list[tuple[str, int]]:
    """(document, number of messages): consecutive messages joined by newlines, each document
    closed once it reaches DOC_TARGET_BYTES."""
    docs, current, size = [], [], 0
    for msg in messages:
        current.append(msg)
        size += len(msg.encode("utf-8")) + 1
        if size >= DOC_TARGET_BYTES:
            docs.append(("\n".join(current), len(current)))
            current, size = [], 0
    if current:
        docs.append(("\n".join(current), len(current)))
    return docs


def collect_language(lang: str, catalogs: list[dict]) -> tuple[list[str], list[dict]]:
    """Documents of one language and the per-catalog usage records."""
    permissive_bytes = 0
    per_catalog = []
    for cat in catalogs:
        pairs = read_catalog(cat["path"])
        texts = translated_messages(pairs, source_side=(lang == ENGLISH))
        per_catalog.append((cat, texts))
        if cat["tier"] == PERMISSIVE:
            permissive_bytes += sum(len(t.encode("utf-8")) for t in texts)
    use_weak = permissive_bytes < MIN_PERMISSIVE_BYTES
    seen: set[str] = set()
    docs: list[str] = []
    total = 0
    used = []
    for cat, texts in per_catalog:
        if cat["tier"] == WEAK_COPYLEFT and not use_weak:
            continue
        fresh = [t for t in texts if t not in seen]
        seen.update(fresh)
        cat_docs, n_messages = [], 0
        for doc, n_doc_messages in group_documents(fresh):
            n = len(doc.encode("utf-8"))
            if total + n > MAX_LANGUAGE_BYTES:
                break
            cat_docs.append(doc)
            n_messages += n_doc_messages
            total += n
        if cat_docs:
            docs.extend(cat_docs)
            used.append({**cat, "documents": len(cat_docs), "messages": n_messages})
        if total + DOC_TARGET_BYTES > MAX_LANGUAGE_BYTES:
            break
    return docs, used


def write_shard(path: str, docs: list[str]) -> None:
    """Gzipped JSONL with mtime 0 and no embedded name (byte-reproducible), written atomically."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for doc in docs:
            gz.write((json.dumps({"text": doc}, ensure_ascii=False, sort_keys=True) + "\n")
                     .encode("utf-8"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def build(out_dir: str) -> dict:
    """Builds every language into out_dir and returns the manifest (also written there)."""
    all_paths = sorted(glob.glob(f"{LOCALE_ROOT}/*/LC_MESSAGES/*.mo"))
    if not all_paths:
        raise BuildError(f"no gettext catalogs under {LOCALE_ROOT}/*/LC_MESSAGES/")
    owners = owning_packages(all_paths)
    packages = {pkg: package_info(pkg) for pkg in sorted(set(owners.values()) & set(SOURCE_PACKAGES))}
    missing = sorted(p for p in SOURCE_PACKAGES if p not in packages)
    if missing:
        print(f"note: source packages not installed (skipped): {', '.join(missing)}")

    plan: dict[str, list[dict]] = {}
    for lang in [*LOCALE_DIRS, ENGLISH]:
        if languages.resolve_language(lang).code != lang:
            raise BuildError(f"{lang!r} is not itself a MADLAD-400 code")
    for lang, locales in LOCALE_DIRS.items():
        plan[lang] = find_catalogs(locales, owners)
    # English: msgids of the permissive catalogs of every locale (the upstream source strings).
    every_locale = sorted({p.split("/")[4] for p in all_paths})
    plan[ENGLISH] = [c for c in find_catalogs(tuple(every_locale), owners) if c["tier"] == PERMISSIVE]

    manifest = {
        "description": "Embedded multilingual corpus in the MADLAD-400 clean layout, built from "
                       "Debian gettext catalogs by scripts/build_corpus.py",
        "parameters": {"doc_target_bytes": DOC_TARGET_BYTES,
                       "min_permissive_bytes": MIN_PERMISSIVE_BYTES,
                       "max_language_bytes": MAX_LANGUAGE_BYTES},
        "locale_to_madlad": {loc: lang for lang, locs in LOCALE_DIRS.items() for loc in locs},
        "english_source": "msgid strings of the permissive-tier catalogs of every locale",
        "packages": packages,
        "languages": {},
    }
    for lang in sorted(plan):
        docs, used = collect_language(lang, plan[lang])
        if not docs:
            raise BuildError(f"language {lang}: no usable messages in {LOCALE_DIRS.get(lang)}")
        rel = f"{lang}/{lang}_clean_0000.jsonl.gz"
        write_shard(os.path.join(out_dir, rel), docs)
        licenses = sorted({packages[c["package"]]["license"] for c in used})
        manifest["languages"][lang] = {
            "script": languages.LANGUAGES[lang].script,
            "locales": list(LOCALE_DIRS.get(lang, ("msgid",))),
            "documents": len(docs),
            "text_bytes": sum(len(d.encode("utf-8")) for d in docs),
            "licenses": licenses,
            "files": [{"path": rel, "sha256": sha256_file(os.path.join(out_dir, rel)),
                       "bytes": os.path.getsize(os.path.join(out_dir, rel)),
                       "licenses": licenses}],
            "sources": [{"path": c["path"], "package": c["package"],
                         "source_package": packages[c["package"]]["source_package"],
                         "license": packages[c["package"]]["license"],
                         "sha256": sha256_file(c["path"]), "documents": c["documents"],
                         "messages": c["messages"]} for c in used],
        }
    _write_text(os.path.join(out_dir, "MANIFEST.json"),
                json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    _write_text(os.path.join(out_dir, "README.md"), readme(manifest))
    return manifest


def _write_text(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def readme(manifest: dict) -> str:
    """The corpus card (README.md), generated from the manifest."""
    langs = manifest["languages"]
    lines = [
        "# Embedded multilingual corpus",
        "",
        "Generated by `scripts/build_corpus.py` (do not edit; rebuild with "
        "`python scripts/build_corpus.py`, verify with `--check`).",
        "",
        "Human-translated text from the gettext message catalogs of Debian packages, in the "
        "MADLAD-400 clean layout (`{lang}/{lang}_clean_0000.jsonl.gz`, field `text`). English is "
        "the catalogs' msgid source strings. Each document is a run of consecutive messages of "
        f"one catalog (about {DOC_TARGET_BYTES} bytes), messages deduplicated within a language. "
        "`MANIFEST.json` records every input catalog (package, source package, license, sha256) "
        "and every output file (sha256). Token counts for the shipped vocabulary are in "
        "`../vocabs/corpus_spm.json`.",
        "",
        "Locale → MADLAD code: " + ", ".join(f"{loc} → {code}" for loc, code
                                           in sorted(manifest["locale_to_madlad"].items())) + ".",
        "zh_TW/zh_HK/zh_Hant (Traditional) and regional or script variants (ca@valencia, "
        "sr@latin, en_GB, ...) are not used.",
        "",
        "| lang | script | documents | text bytes | gzip bytes | licenses |",
        "|---|---|---:|---:|---:|---|",
    ]
    for lang, info in langs.items():
        gz = sum(f["bytes"] for f in info["files"])
        lines.append(f"| {lang} | {info['script']} | {info['documents']} | {info['text_bytes']:,} "
                     f"| {gz:,} | {', '.join(info['licenses'])} |")
    low = sorted(lang for lang, info in langs.items() if info["text_bytes"] < 100_000)
    lines += ["", f"Low-resource languages (under 100 kB of text; a demo repeats them for several "
                  f"epochs): {', '.join(low)}.", ""]
    return "\n".join(lines)


def output_hashes(manifest: dict) -> dict[str, str]:
    return {f["path"]: f["sha256"] for info in manifest["languages"].values() for f in info["files"]}


def _main(argv: list[str] | None) -> int:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    parser.add_argument("--out", default=DEFAULT_OUT, help="corpus folder to (re)write")
    parser.add_argument("--check", action="store_true",
                        help="rebuild into a temporary folder and compare with --out's MANIFEST.json")
    args = parser.parse_args(argv)
    try:
        if args.check:
            committed_path = os.path.join(args.out, "MANIFEST.json")
            if not os.path.isfile(committed_path):
                raise BuildError(f"{committed_path}: no manifest to check against")
            with open(committed_path, encoding="utf-8") as f:
                committed = output_hashes(json.load(f))
            with tempfile.TemporaryDirectory() as tmp:
                rebuilt = output_hashes(build(tmp))
            diff = sorted(p for p in set(committed) | set(rebuilt) if committed.get(p) != rebuilt.get(p))
            for p in diff:
                print(f"DIFFERS {p}: committed {committed.get(p)} rebuilt {rebuilt.get(p)}")
            print(f"checked {len(rebuilt)} files: {len(rebuilt) - len(diff)} identical, {len(diff)} differ")
            return 1 if diff else 0
        os.makedirs(args.out, exist_ok=True)
        manifest = build(args.out)
    except BuildError as err:
        raise common.UsageError(str(err)) from err
    total_bytes = total_gz = 0
    print(f"{'lang':5} {'script':6} {'docs':>6} {'text KB':>8} {'gz KB':>7}  licenses")
    for lang, info in manifest["languages"].items():
        gz = sum(f["bytes"] for f in info["files"])
        total_bytes += info["text_bytes"]
        total_gz += gz
        print(f"{lang:5} {info['script']:6} {info['documents']:6d} {info['text_bytes'] / 1e3:8.1f} "
              f"{gz / 1e3:7.1f}  {', '.join(info['licenses'])}")
    scripts = collections.Counter(i["script"] for i in manifest["languages"].values())
    print(f"{len(manifest['languages'])} languages, {len(scripts)} scripts, "
          f"{total_bytes / 1e6:.2f} MB text, {total_gz / 1e6:.2f} MB gzipped -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """atlas-build-corpus; `argv` without the program name (default sys.argv[1:]). Returns the exit code."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
