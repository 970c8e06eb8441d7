"""SIB-200 for xpe: language groups, loading (a local copy or the hub), tokenising and batching.

SIB-200 (Adelani et al., EACL 2024) is topic classification over 205 languages, 7 labels, the same
FLORES-200 sentences in every language: train 701, dev 99, test 204 rows each. A local copy has
the layout of the dadelani/sib-200 repository, DIR/<code>/{train,dev,test}.tsv with the header
index_id<TAB>category<TAB>text. The hub copy, Davlan/sib200, keeps the very same files under
data/<code>/, so both ways end in one reader and one set of checks.

Everything a user can get wrong raises DataError, whose message is one line saying what is wrong
and what to do about it.
"""
import csv
import difflib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
HUB_DATASET = "Davlan/sib200"
SPLITS = ("train", "dev", "test")  # the hub's loaders call dev "validation"
GROUPS_PATH = Path(__file__).with_name("groups.json")

HEADER = ["index_id", "category", "text"]
LABEL_IDS = {name: i for i, name in enumerate(LABELS)}
LAYOUT = "DIR/<code>/{train,dev,test}.tsv, as in github.com/dadelani/sib-200 data/annotated"


class DataError(ValueError):
    """A user-caused data problem; str(e) is one line that says what is wrong and what to do."""


@dataclass(frozen=True)
class Example:
    lang: str
    index_id: str
    label: int
    text: str


# -----------------------------------------------------------------------------
# language groups

def load_groups(path=GROUPS_PATH):
    """{group name: sorted FLORES-200 codes} from groups.json ({"groups": {name: {"languages": [...]}}})."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        groups = {name: list(g["languages"]) for name, g in raw["groups"].items()}
    except FileNotFoundError:
        raise DataError(f"group file {path} not found; it ships beside data.py") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"group file {path} is not of the form "
                        f'{{"groups": {{name: {{"languages": [...]}}}}}} ({type(e).__name__}: {e})') from None
    return groups


def resolve_languages(spec, groups=None):
    """Sorted unique codes for a spec such as "joshi5", "eng_Latn,fra_Latn" or "all-lowperf,eng_Latn".

    Comma-separated items are united; inside an item, "a-b-c" is a minus b minus c. Group names
    contain '-' themselves ("all-wo-j5"), so at each place the longest group name wins: "seen-wo-j5"
    is that group, "all-wo-j5-lowperf" is all-wo-j5 minus lowperf. FLORES-200 codes never contain '-'.
    """
    groups = load_groups() if groups is None else groups
    codes = set(groups.get("all") or {c for members in groups.values() for c in members})
    known = {**{c: [c] for c in codes}, **groups}
    items = [item.strip() for item in str(spec).split(",")]
    if not any(items):
        raise DataError(f"no languages given ({spec!r}); name a group ({', '.join(groups)}) or codes like eng_Latn")
    chosen = set()
    for item in filter(None, items):
        parts = [p.strip() for p in item.split("-")]
        if "" in parts:
            raise DataError(f"empty term in {item!r}; write a-b for the languages of a that are not in b")
        terms, i = [], 0
        while i < len(parts):
            j = next((j for j in range(len(parts), i, -1) if "-".join(parts[i:j]) in known), None)
            if j is None:
                raise DataError(_unknown("-".join(parts[i:]), item, known, groups))
            terms.append(known["-".join(parts[i:j])])
            i = j
        chosen |= set(terms[0]).difference(*terms[1:])
    if not chosen:
        raise DataError(f"{spec!r} selects no languages; a-b removes b from a, so check the order of the terms")
    return sorted(chosen)


def _unknown(term, item, known, groups):
    # case-insensitive closeness, so "eng_latn" finds "eng_Latn" and "Joshi5" finds "joshi5"
    lower = {k.lower(): k for k in known}
    close = []
    for q in dict.fromkeys([item, term] if item != term else [term]):
        close += [lower[m] for m in difflib.get_close_matches(q.lower(), lower, n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    where = f" in {item!r}" if item != term else ""
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"unknown language or group {term!r}{where}; {hint}use FLORES-200 codes like eng_Latn "
            f"or a group: {', '.join(groups)}")


# -----------------------------------------------------------------------------
# loading

def load_split(languages, split, data_dir=None):
    """All rows of one split for the languages, in the order given, each row keeping its language.

    data_dir: a local copy (DIR/<code>/<split>.tsv); None reads the same files from the hub.
    """
    split = {"validation": "dev"}.get(split, split)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (or validation for dev)")
    if isinstance(languages, str) or not languages:
        raise DataError(f"languages must be a non-empty list of codes, got {languages!r}")
    paths = _local_files(languages, split, Path(data_dir)) if data_dir is not None else _hub_files(languages, split)
    examples = []
    for lang, path in zip(languages, paths):
        examples += _read_tsv(path, lang)
    return examples


def _local_files(languages, split, root):
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; "
                        f"point --data-dir at a SIB-200 copy laid out as {LAYOUT}")
    paths = []
    for lang in languages:
        if not (root / lang).is_dir():
            raise DataError(f"no folder {root / lang} for language {lang}; --data-dir must be laid out as {LAYOUT}")
        path = root / lang / f"{split}.tsv"
        if not path.is_file():
            raise DataError(f"split file {path} is missing; "
                            f"every language folder needs train.tsv, dev.tsv and test.tsv")
        paths.append(path)
    return paths


def _hub_files(languages, split):
    # Davlan/sib200 once loaded through a script, which datasets>=4 refuses; its data/<code>/*.tsv
    # are the repository's own files, so fetching them with huggingface_hub (a dependency of both
    # transformers and datasets) works with every datasets version and lands in the local reader.
    unreachable = (f"could not reach the Hugging Face hub for {HUB_DATASET} and the files are not cached; "
                   f"download SIB-200 ({LAYOUT}) and pass --data-dir DIR")
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        raise DataError(f"reading {HUB_DATASET} from the hub needs huggingface_hub (pip install datasets); "
                        f"or pass --data-dir DIR with a local copy ({LAYOUT})") from None
    names = [f"data/{lang}/{split}.tsv" for lang in languages]
    # hf_hub_download retries a dead connection for about 25 s per file; one short probe says at
    # once whether the hub answers, and when it does not only cached files are of any use
    if not constants.HF_HUB_OFFLINE and not _hub_answers(constants.ENDPOINT):
        cached = [try_to_load_from_cache(HUB_DATASET, name, repo_type="dataset") for name in names]
        if all(isinstance(path, str) for path in cached):
            return [Path(path) for path in cached]
        raise DataError(unreachable)
    paths = []
    for name in names:
        try:
            paths.append(Path(hf_hub_download(HUB_DATASET, name, repo_type="dataset")))
        except LocalEntryNotFoundError:  # offline, or the connection failed, and nothing cached
            raise DataError(unreachable + (" (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else "")) from None
        except EntryNotFoundError:  # the hub answered: no such file
            raise DataError(f"{HUB_DATASET} on the hub has no {name}; check the language code, "
                            f"or pass --data-dir DIR with a local copy ({LAYOUT})") from None
        except Exception as e:  # proxy, rate limit, moved repository...
            raise DataError(f"{unreachable} ({type(e).__name__})") from None
    return paths


def _hub_answers(endpoint):
    from huggingface_hub import get_session  # the hub's own session: same proxies and certificates
    try:  # any HTTP answer at all, even an error status, means the hub is reachable
        get_session().head(f"{endpoint}/api/datasets/{HUB_DATASET}", timeout=5)
        return True
    except Exception:
        return False


def _read_tsv(path, lang):
    """Rows of one SIB-200 file; any malformed row is an error naming the file and line."""
    examples = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            # Not QUOTE_NONE: the 7,688 texts with a '"' are all written CSV-style, wrapped in quotes
            # with inner quotes doubled (pandas.read_csv, which loaders of these files use, undoes
            # that); strict makes a stray quote an error instead of a silently merged field.
            rows = csv.reader(f, delimiter="\t", strict=True)
            header = next(rows, None)
            if header != HEADER:
                raise DataError(f"{path}, line 1: header is {header!r}, expected the columns "
                                f"index_id, category, text separated by tabs")
            for row in rows:
                where = f"{path}, line {rows.line_num}"
                if len(row) != 3:
                    raise DataError(f"{where}: {len(row)} tab-separated fields, expected 3 (index_id, category, "
                                    f"text); a text must not contain a tab or a line break")
                index_id, category, text = row
                if category not in LABEL_IDS:
                    raise DataError(f"{where}: unknown category {category!r}; expected one of {', '.join(LABELS)}")
                if not index_id or not text:
                    raise DataError(f"{where}: empty index_id or text")
                examples.append(Example(lang, index_id, LABEL_IDS[category], text))
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); re-download it") from None
    except csv.Error as e:
        raise DataError(f"{path}, line {rows.line_num}: {e}") from None
    return examples


# -----------------------------------------------------------------------------
# tokens and batches

def encode(examples, tokenizer, max_length=164):
    """Token ids per example: <s> ... </s>, truncated at max_length, not padded (batches pad themselves)."""
    texts = [ex.text for ex in examples]
    if not texts:
        return []
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


def eval_batches(lengths, batch_size):
    """Batches of row indices, longest rows first; the indices put predictions back in place."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def to_device(tensors, device):
    """Copy a batch to the device; on CUDA through pinned memory, so the copy does not stall the host."""
    if device.type == "cuda":
        return [t.pin_memory().to(device, non_blocking=True) for t in tensors]
    return [t.to(device) for t in tensors]


def collate(ids, indices, pad_id):
    """(input_ids, attention_mask), int64, the rows ids[i] for i in indices padded on the right."""
    rows = [ids[i] for i in indices]
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return input_ids, mask
