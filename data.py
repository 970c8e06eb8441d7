"""Classification data for xpe: language groups, loading (a local folder or the hub), tokenising and batching.

The default data is SIB-200 (Adelani et al., EACL 2024): topic classification over 205 languages,
7 labels, the same FLORES-200 sentences in every language: train 701, dev 99, test 204 rows each.
A local folder has the layout of the dadelani/sib-200 repository, DIR/<code>/{train,dev,test}.tsv
with the header index_id<TAB>category<TAB>text, and may hold any other classification data in that
layout: its language codes are its folder names, its labels come from labels.txt (one a line) in the
language folders or else from the categories of the training rows. The hub copy, Davlan/sib200,
keeps the very same files under data/<code>/ and lists a config a language in its card, so
datasets.load_dataset reads it (and caches it as datasets caches); its rows pass the same checks.

Everything a user can get wrong raises xpe.UsageError, whose message is one line saying what is wrong
and what to do about it.
"""
import csv
import difflib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from xpe import MAX_LENGTH, UsageError, template_ids, unique_keys

LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
HUB_DATASET = "Davlan/sib200"
SPLITS = ("train", "dev", "test")  # the hub's loaders call dev "validation"
GROUPS_PATH = Path(__file__).with_name("groups.json")

HEADER = ["index_id", "category", "text"]
LAYOUT = "DIR/<code>/{train,dev,test}.tsv, as in github.com/dadelani/sib-200 data/annotated"
LABELS_FILE = "labels.txt"
SPEC_SYNTAX = "-,"  # a language spec joins items with ',' and subtracts with '-', so no code may hold either


@dataclass(frozen=True)
class Example:
    lang: str
    index_id: str
    label: int
    text: str


# -----------------------------------------------------------------------------
# languages and their groups

def languages_in(data_dir):
    """Sorted language codes of a local folder: the names of its subfolders."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data directory {root} does not exist; point --data-dir at a folder laid out as {LAYOUT}")
    # files beside the folders (NOTICE.md, README) are no languages, nor hidden folders such as .git
    codes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not codes:
        raise UsageError(f"data directory {root} has no language folders; lay it out as {LAYOUT}")
    for code in codes:
        check_code(code, f" (folder {root / code})", "rename the folder")
    return codes


def check_code(code, where, fix):
    bad = next((ch for ch in SPEC_SYNTAX if ch in code), None)
    if bad:
        meaning = "a-b means a minus b" if bad == "-" else "a,b means a and b"
        raise UsageError(f"language code {code!r}{where} contains {bad!r}, which language specs read as syntax "
                        f"({meaning}); {fix}, e.g. to {code.replace(bad, '_')!r}")
    if not code.strip() or code != code.strip():  # a spec drops the spaces around its items, so none could name it
        raise UsageError(f"language code {code!r}{where} is empty or has spaces around it, which language specs "
                        f"drop; {fix}, e.g. to {code.strip() or 'xx_Latn'!r}")


def load_groups(path=GROUPS_PATH):
    """{group name: codes} from a groups file ({"groups": {name: {"languages": [...], "note": ...}}})."""
    path = Path(path)
    form = '{"groups": {name: {"languages": [...]}}}'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
        groups = {name: list(g["languages"]) for name, g in raw["groups"].items()}
    except FileNotFoundError:
        fix = "it ships beside data.py" if path == GROUPS_PATH else "check the path"
        raise UsageError(f"group file {path} not found; {fix}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"group file {path} is not of the form {form} ({type(e).__name__}: {e})") from None
    for name, g in raw["groups"].items():
        # list("eng_Latn") would quietly make a group of the letters e, n, g...
        codes = g["languages"]
        if isinstance(codes, str) or not codes or not all(isinstance(c, str) for c in codes):
            raise UsageError(f"group file {path}: the languages of group {name!r} must be a list of codes "
                            f"like [\"eng_Latn\"], got {codes!r}")
        if not name.strip():
            raise UsageError(f"group file {path}: a group of {codes[0]}... has an empty name: name it")
        if "," in name:  # no spec could name it: "a,b" is a and b
            raise UsageError(f"group file {path}: the group name {name!r} contains ',', which language specs read as "
                            f"'and': rename it, e.g. to {name.replace(',', '_')!r}")
        parts = name.split("-")
        if any(not part or part != part.strip() for part in parts):  # a spec reads "a - b" as a-b, "a-" as nothing
            fixed = "-".join(filter(None, map(str.strip, parts))) or "g"
            raise UsageError(f"group file {path}: no language spec can name the group {name!r} (spaces around it or "
                            f"its '-', or an empty part): rename it, e.g. to {fixed!r}")
        for i, code in enumerate(codes):
            check_code(code, f" (group {name!r} of {path})", "rename it")
            if code in codes[:i]:
                raise UsageError(f"group file {path}: group {name!r} lists {code!r} twice: list each language once")
    return groups


def check_groups(groups, codes, path, data_dir=None):
    """A user's groups file against the language codes of the data: every named language must exist.

    Not for the shipped groups.json with a data folder of one's own: there a group only fails when used.
    """
    codes = set(codes)
    where = f"{data_dir} has" if data_dir is not None else "the data has"
    for name, members in groups.items():
        if name in codes:  # a spec would silently pick the group, never the language
            raise UsageError(f"group {name!r} of {path} has the name of a language of the data; rename the group")
        for code in members:
            if code not in codes:
                close = difflib.get_close_matches(code, codes, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise UsageError(f"group {name!r} of {path} names language {code!r}{hint}, for which {where} no "
                                f"folder; remove it from the group or add the folder")


def groups_and_codes(groups_file=None, data_dir=None):
    """(groups, codes) for a call: groups.json or a user's groups file, and the data folder's language codes.

    A user's file must name only languages the folder has; groups.json, made for SIB-200, only fails
    where a group that the folder lacks is used. codes is None for the hub (SIB-200: groups.json's all).
    """
    groups = load_groups(groups_file or GROUPS_PATH)
    codes = languages_in(data_dir) if data_dir is not None else None
    if groups_file and codes is not None:
        check_groups(groups, codes, groups_file, data_dir)
    return groups, codes


def resolve_languages(spec, groups=None, codes=None):
    """Sorted unique codes for a spec such as "joshi5", "eng_Latn,fra_Latn" or "all-lowperf,eng_Latn".

    codes: the known language codes, e.g. languages_in(data_dir); by default the groups' "all" (or,
    without one, every code of a group). A groups file without an "all" group gets one: every code.
    Comma-separated items are united; inside an item, "a-b-c" is a minus b minus c. Group names
    contain '-' themselves ("all-wo-j5"), so at each place the longest group name wins: "seen-wo-j5"
    is that group, "all-wo-j5-lowperf" is all-wo-j5 minus lowperf. Codes never contain '-' (FLORES-200
    codes do not, and languages_in refuses such folders).
    """
    groups = load_groups() if groups is None else groups
    if codes is None:
        codes = groups.get("all") or sorted({c for members in groups.values() for c in members})
    codes = sorted(set(codes))
    for code in codes:
        check_code(code, "", "rename it")
    known = {**{c: [c] for c in codes}, "all": codes, **groups}
    example = "eng_Latn" if "eng_Latn" in codes or not codes else codes[0]
    if not str(spec).strip(" ,"):
        raise UsageError(f"no languages given ({spec!r}); name a group ({', '.join(_group_names(groups))}) "
                        f"or codes like {example}")
    chosen = set()
    for item in spec_items(spec):
        parts = item.split("-")
        terms, i = [], 0
        while i < len(parts):
            j = next((j for j in range(len(parts), i, -1) if "-".join(parts[i:j]) in known), None)
            if j is None:
                raise UsageError(_unknown("-".join(parts[i:]), item, known, _group_names(groups), example))
            terms.append(known["-".join(parts[i:j])])
            i = j
        chosen |= set(terms[0]).difference(*terms[1:])
    if not chosen:
        raise UsageError(f"{spec!r} selects no languages; a-b removes b from a, so check the order of the terms")
    return sorted(chosen)


def spec_items(spec):
    """The items of a language spec, each with its terms stripped ("a - b" is "a-b"), in the order given; an empty
    item or term ("eng_Latn,", "a,,b", "joshi5-") or an item given twice is a UsageError."""
    if not str(spec).strip(" ,\t\n\r"):
        raise UsageError(f"no languages given ({spec!r}): name a group, or codes like eng_Latn")
    items = []
    for item in str(spec).split(","):
        parts = [p.strip() for p in item.split("-")]
        if not item.strip():
            raise UsageError(f"empty item in the language spec {spec!r}: a comma joins two items, so take out the "
                            f"stray comma")
        if "" in parts:
            raise UsageError(f"empty term in {item.strip()!r} (in {spec!r}); write a-b for the languages of a that "
                            f"are not in b")
        item = "-".join(parts)
        if item in items:
            raise UsageError(f"the language spec {spec!r} names {item!r} twice: name it once")
        items.append(item)
    return items


def canonical_spec(spec):
    """One spelling for a spec's text: its items (spec_items) sorted, so that "fra_Latn, eng_Latn" and
    "eng_Latn,fra_Latn" are recorded, and tabulated, as one source."""
    return ",".join(sorted(spec_items(spec)))


def _group_names(groups):
    return list(groups) + ([] if "all" in groups else ["all"])


def _unknown(term, item, known, group_names, example):
    # case-insensitive closeness, so "eng_latn" finds "eng_Latn" and "Joshi5" finds "joshi5"
    lower = {k.lower(): k for k in known}
    close = []
    for q in dict.fromkeys([item, term] if item != term else [term]):
        close += [lower[m] for m in difflib.get_close_matches(q.lower(), lower, n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    where = f" in {item!r}" if item != term else ""
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"unknown language or group {term!r}{where}; {hint}use language codes like {example} "
            f"or a group: {', '.join(group_names)}")


# -----------------------------------------------------------------------------
# labels

def find_labels(languages, data_dir):
    """The labels of a training run on these languages, in the order of the classifier's outputs.

    The hub (data_dir None) is SIB-200: LABELS. A local folder: the labels.txt of the languages'
    folders where any have one (they must agree), else the sorted categories of their training rows.
    """
    if data_dir is None:
        return LABELS
    _check_languages(languages)
    train_paths = _local_files(languages, "train", Path(data_dir))
    listed = [(path.with_name(LABELS_FILE), _read_labels(path.with_name(LABELS_FILE)))
              for path in train_paths if path.with_name(LABELS_FILE).is_file()]
    if listed:
        first_path, labels = listed[0]
        for path, other in listed[1:]:
            if other != labels:
                raise UsageError(f"{first_path} and {path} disagree ({_difference(labels, other)}); every language "
                                f"of a run needs the same labels in the same order, so make the labels.txt files equal")
        where = str(first_path)
    else:
        labels = tuple(sorted({category for path in train_paths for _, _, category, _ in _tsv_rows(path)}))
        where = f"the training rows of {', '.join(languages)}"
    if len(labels) < 2:
        got = f"only {labels[0]!r}" if labels else "none"
        raise UsageError(f"{where}: a classifier needs at least two labels, found {got}; "
                        f"add rows of other categories or list every label in {LABELS_FILE}")
    return labels


def _read_labels(path):
    # The order is the order of the classifier's outputs: SIB-200's labels.txt gives the paper's.
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM would stick to the first label
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    seen = {}
    for number, line in enumerate(lines, 1):
        label = line.strip()
        if not label:
            continue
        if label in seen:
            raise UsageError(f"{path}, line {number}: label {label!r} is listed again (first on line {seen[label]}); "
                            f"list each label once")
        seen[label] = number
    return tuple(seen)


def _difference(a, b):
    only_a, only_b = [x for x in a if x not in b], [x for x in b if x not in a]
    if not only_a and not only_b:
        return "the same labels in another order"
    said = [f"{', '.join(map(repr, only))} only in the {which}"
            for only, which in ((only_a, "first"), (only_b, "second")) if only]
    return "; ".join(said)


# -----------------------------------------------------------------------------
# loading

def load_split(languages, split, data_dir=None, labels=LABELS):
    """All rows of one split for the languages, in the order given, each row keeping its language.

    data_dir: a local folder (DIR/<code>/<split>.tsv); None reads SIB-200's files from the hub.
    labels: the run's labels (find_labels); Example.label indexes them, and any other category is an error.
    """
    split = {"validation": "dev"}.get(split, split)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (or validation for dev)")
    _check_languages(languages)
    labels = tuple(labels)
    label_ids = {name: i for i, name in enumerate(labels)}
    if not labels or len(label_ids) != len(labels):
        raise UsageError(f"the run's labels must be distinct and at least one, got {labels!r}")
    if data_dir is None:
        return _hub_examples(languages, split, labels, label_ids)
    examples = []
    for lang, path in zip(languages, _local_files(languages, split, Path(data_dir))):
        examples += _read_tsv(path, lang, labels, label_ids)
    return examples


def check_rows(examples, languages, split, data_dir=None):
    """examples, when every language has rows in this split; else a UsageError naming those without any."""
    empty = [lang for lang in languages if not any(ex.lang == lang for ex in examples)]
    if empty:
        where = (", ".join(str(Path(data_dir) / lang / f"{split}.tsv") for lang in empty[:3]) if data_dir is not None
                 else f"{HUB_DATASET} on the hub")
        raise UsageError(f"the {split} split of {', '.join(empty)} has no rows ({where}); a run needs rows in the "
                        f"train and dev splits of every language it trains on: add rows or leave the language out")
    return examples


def _check_languages(languages):
    if isinstance(languages, str) or not languages:
        raise UsageError(f"languages must be a non-empty list of codes, got {languages!r}")
    twice = next((lang for i, lang in enumerate(languages) if lang in languages[:i]), None)
    if twice is not None:  # its rows would be read, and counted, twice
        raise UsageError(f"languages name {twice!r} twice, got {list(languages)!r}: name each language once")


def _local_files(languages, split, root):
    if not root.is_dir():
        raise UsageError(f"data directory {root} does not exist; point --data-dir at a folder laid out as {LAYOUT}")
    paths = []
    for lang in languages:
        if not (root / lang).is_dir():
            raise UsageError(f"no folder {root / lang} for language {lang}; choose languages that {root} has, "
                            f"or lay --data-dir out as {LAYOUT}")
        path = root / lang / f"{split}.tsv"
        if not path.is_file():
            raise UsageError(f"split file {path} is missing; "
                            f"every language folder needs train.tsv, dev.tsv and test.tsv")
        paths.append(path)
    return paths


def _hub_examples(languages, split, labels, label_ids):
    """Examples of one split through datasets.load_dataset, one config a language, cached as datasets caches."""
    # Davlan/sib200's card lists a config a language over the repository's own data/<code>/{train,dev,test}.tsv
    # (dev as the split validation), so load_dataset reads them with its csv builder and no loading script.
    repo = HUB_DATASET
    unreachable = (f"could not reach the Hugging Face hub for {repo} and the language is not in datasets' cache; "
                   f"download SIB-200 ({LAYOUT}) and pass --data-dir DIR")
    try:
        import datasets
        from huggingface_hub import constants
    except ImportError:
        raise UsageError(f"reading {repo} from the hub needs datasets (pip install datasets); "
                        f"or pass --data-dir DIR with a local copy ({LAYOUT})") from None
    # every column a string, and no text taken for a missing value (pandas reads "NA" or "null" as NaN); a
    # line a row, quotes left as they are for _hub_rows to unwrap as _tsv_rows does (pandas' own quoting
    # takes a text that opens with a stray quote on to the next quote, merging the rows between)
    options = dict(features=datasets.Features({name: datasets.Value("string") for name in HEADER}),
                   keep_default_na=False, na_filter=False, quoting=csv.QUOTE_NONE)
    # load_dataset retries a dead connection for about 25 s; one short probe says at once whether the hub
    # answers, and when it does not only datasets' cache is of any use, which its offline mode reads
    switches = [name for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(datasets.config, name)]
    saved = {name: getattr(datasets.config, name) for name in switches}  # datasets 2.x reads the second
    offline = any(saved.values()) or not (Path(repo).is_dir() or _hub_answers(constants.ENDPOINT))
    for name in switches:
        setattr(datasets.config, name, offline)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar for every language and split would bury the run's own output
    examples = []
    try:
        for lang in languages:
            try:
                rows = datasets.load_dataset(repo, lang, split={"dev": "validation"}.get(split, split), **options)
            except ConnectionError:  # offline, or no answer, and not cached
                raise UsageError(unreachable + (" (offline mode is set)" if any(saved.values()) else "")) from None
            except ValueError as e:
                if "BuilderConfig" not in str(e):
                    raise
                raise UsageError(f"{repo} has no language {lang}; check the language code, or pass --data-dir DIR "
                                f"with a local copy ({LAYOUT})") from None
            except Exception as e:  # a file that the csv builder cannot parse, a moved repository...
                raise UsageError(f"{repo}: cannot load {lang} {split} ({type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
            examples += _hub_rows(rows, f"{repo} {lang} {split}", lang, labels, label_ids)
    finally:
        for name, value in saved.items():
            setattr(datasets.config, name, value)
        if bars_were_on:
            datasets.enable_progress_bars()
    return examples


def _hub_rows(rows, where, lang, labels, label_ids):
    """Examples of one loaded split, checked as _read_tsv checks a file's rows."""
    if list(rows.column_names) != HEADER:
        raise UsageError(f"{where}: columns {rows.column_names}, expected {', '.join(HEADER)}")
    examples, first_row = [], {}
    for n, row in enumerate(zip(rows["index_id"], rows["category"], rows["text"]), 1):
        index_id, category, text = _row_fields(*(_unquote(field or "") for field in row))
        if not index_id or not category or not text.strip():
            raise UsageError(f"{where}, row {n}: empty index_id, category or text")
        if first_row.setdefault(index_id, n) != n:
            raise UsageError(f"{where}, row {n}: index_id {index_id!r} again (first in row {first_row[index_id]}); "
                            f"a sentence is counted once, so the hub's copy is broken: pass --data-dir DIR with a "
                            f"local copy ({LAYOUT})")
        if category not in label_ids:
            raise UsageError(f"{where}, row {n}: unknown category {category!r}, not one of the run's labels "
                            f"({', '.join(labels)})")
        examples.append(Example(lang, index_id, label_ids[category], text))
    return examples


def _hub_answers(endpoint):
    from huggingface_hub import get_session  # the hub's own session: same proxies and certificates
    try:  # any HTTP answer at all, even an error status, means the hub is reachable
        get_session().head(f"{endpoint}/api/datasets/{HUB_DATASET}", timeout=5)
        return True
    except Exception:
        return False


def _read_tsv(path, lang, labels, label_ids):
    """Examples of one file; a category outside the run's labels is an error naming the file and line."""
    examples = []
    for line, index_id, category, text in _tsv_rows(path):
        if category not in label_ids:
            raise UsageError(f"{path}, line {line}: unknown category {category!r}, not one of the run's labels "
                            f"({', '.join(labels)}); fix the row, or list every category of the data in the "
                            f"language folders' {LABELS_FILE} (one a line) before training")
        examples.append(Example(lang, index_id, label_ids[category], text))
    return examples


def _tsv_rows(path):
    """(line number, index_id, category, text) per row of one file; a malformed row is an error naming the line.

    A row is one line, its fields split at the tabs, so no quote can join lines or fields (a CSV reader
    takes a text that opens with a stray quote on to the next quote, merging the rows between). A field
    written CSV-style, wrapped in quotes with inner quotes doubled, is unwrapped: SIB-200 writes its 7,688
    texts with a '"' so, and the loaders of its files (pandas.read_csv) undo it. Any other quote is text.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM would stick to the header
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                        f"save it as UTF-8, or re-download it") from None
    if lines[-1] == "":
        lines.pop()  # what follows the last line's newline
    rows = [(number, _fields(path, number, line)) for number, line in enumerate(lines, 1)]
    header = rows[0][1] if rows else None
    if header != HEADER:
        raise UsageError(f"{path}, line 1: header is {header!r}, expected the columns "
                        f"index_id, category, text separated by tabs")
    rows_out, first_line = [], {}
    for number, row in rows[1:]:
        where = f"{path}, line {number}"
        if len(row) != 3:
            raise UsageError(f"{where}: {len(row)} tab-separated fields, expected 3 (index_id, category, text); "
                            f"write each row on one line as index_id<TAB>category<TAB>text, with no tab in the text")
        index_id, category, text = _row_fields(*row)
        if not index_id or not category or not text.strip():
            raise UsageError(f"{where}: empty index_id, category or text")
        if first_line.setdefault(index_id, number) != number:
            raise UsageError(f"{where}: index_id {index_id!r} again (first on line {first_line[index_id]}); a "
                            f"sentence is counted once, so remove the repeated row or give it an index_id of its own")
        rows_out.append((number, index_id, category, text))
    return rows_out


def _row_fields(index_id, category, text):
    """A row's fields as they are meant: an index_id or a category with spaces around it is the one without (as
    labels.txt's lines are read), so that "travel " is no label of its own; the text is kept as written."""
    return index_id.strip(), category.strip(), text


def _fields(path, number, line):
    """The fields of one line of a TSV file, each unwrapped if written CSV-style (_unquote)."""
    line = line[:-1] if line.endswith("\r") else line  # a Windows line end
    if "\r" in line:
        raise UsageError(f"{path}, line {number}: a carriage return inside the line; a row is one line, "
                        f"so take the line break out of the text")
    return [_unquote(field) for field in line.split("\t")] if line else []


_CSV_QUOTED = re.compile(r'"([^"]*(?:""[^"]*)*)"')  # the whole field in quotes, every inner quote doubled


def _unquote(field):
    """A field as written CSV-style, unwrapped; any other field as it is."""
    quoted = _CSV_QUOTED.fullmatch(field) if field.startswith('"') else None
    return quoted.group(1).replace('""', '"') if quoted else field


# -----------------------------------------------------------------------------
# tokens and batches

def encode(examples, tokenizer, max_length=MAX_LENGTH, template=None):
    """Token ids per example: <s> ... </s>, truncated at max_length, not padded (batches pad themselves); for a
    decoder (template: xpe.decoder_template's) the text in its template, cut so that the row keeps max_length."""
    texts = [ex.text for ex in examples]
    if not texts:
        return []
    if template:
        return template_ids(tokenizer, texts, template["text_template"], max_length, template["chat_template"])
    enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                    padding=False, return_attention_mask=False, return_token_type_ids=False)
    return [list(ids) for ids in enc["input_ids"]]


def train_batches(lengths, batch_size, seed, epoch):
    """One epoch's batches of row indices, rows of similar length together (HF's group_by_length).

    The generator depends on (seed, epoch) alone, so a resumed run rebuilds any epoch's plan.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = random.Random(f"xpe/train_batches/{seed}/{epoch}")  # a str seed goes through sha512: same in every run
    order = list(range(len(lengths)))
    rng.shuffle(order)
    # sorting within mega-batches of 50 batches keeps most padding away and most randomness in
    mega = 50 * batch_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)  # otherwise every mega-batch would start with its longest batch
    return batches


def batch_plan(lengths, batch_size, seed, first_step=0):
    """The batches of row indices of a seed's steps first_step, first_step + 1, ...: epoch after epoch of
    train_batches. train.fit takes its batches from it and tools/bench.py times the same ones."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    epoch, offset = divmod(first_step, per_epoch)
    while True:
        yield from train_batches(lengths, batch_size, seed, epoch)[offset:]
        epoch, offset = epoch + 1, 0
