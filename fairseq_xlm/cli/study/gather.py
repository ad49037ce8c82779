"""The numbers of finished jobs as records, and their collection: what ``make replicate``'s report and ``make
demo``'s RESULTS.md are both built from.

A record file holds tab-separated ``claim measure arm seed value`` lines (one job's numbers, written
atomically). ``collect`` turns records into ``{claim: {measure: {arm: {seed: value}}}}``. The readers below
take the files the recipes leave behind (fairseq's validation lines, evaluate_mt.sh's and evaluate_xnli's
tables, evaluate_retrieval's JSON, sacrebleu's score) and return ``{measure: value}``; a file that is missing
or not what its writer writes is an error naming it.
"""

import json
import os
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from fairseq_xlm.atomic_lines import write_lines
from fairseq_xlm.cli.curves import METRIC, VALID_LINE

Record = Tuple[str, str, str, int, float]  # claim, measure, arm, seed, value
Collected = Dict[str, Dict[str, Dict[str, Dict[int, float]]]]  # claim -> measure -> arm -> seed -> value


# ------------------------------------------------------------------------------------------- records
def records_of(claim: str, arm: str, seed: int, values: Mapping[str, float]) -> List[Record]:
    """One job's ``{measure: value}`` as records."""
    return [(claim, measure, arm, int(seed), float(value)) for measure, value in values.items()]


def write_records(path: str, records: Sequence[Record]) -> None:
    """``records`` as ``claim measure arm seed value`` lines at ``path`` (atomically; folders made)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_lines(path, [f"{c}\t{m}\t{a}\t{s}\t{v:.6g}" for c, m, a, s, v in records])


def read_records(paths: Iterable[str]) -> List[Record]:
    """Every ``claim measure arm seed value`` line of ``paths``; a malformed line is an error naming it."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for k, line in enumerate(f, 1):
                if not line.strip():
                    continue
                cells = line.rstrip("\n").split("\t")
                try:
                    claim, measure, arm, seed, value = cells
                    out.append((claim, measure, arm, int(seed), float(value)))
                except ValueError:
                    raise ValueError(f"{path}:{k}: expected 'claim measure arm seed value', got {line.strip()!r}")
    return out


def collect(records: Iterable[Record]) -> Collected:
    """``{claim: {measure: {arm: {seed: value}}}}``; the same (claim, measure, arm, seed) twice is an error
    (two jobs wrote one cell: a copied record file or two studies in one folder)."""
    data: Collected = {}
    for claim, measure, arm, seed, value in records:
        cell = data.setdefault(claim, {}).setdefault(measure, {}).setdefault(arm, {})
        if seed in cell and cell[seed] != value:
            raise ValueError(f"two values for claim {claim}, {measure}, arm {arm}, seed {seed}: {cell[seed]} and "
                             f"{value}")
        cell[seed] = value
    return data


def read_plan(path: str) -> List[Tuple[str, bool, List[str], str]]:
    """(claim, runs, arms in the expected order, note) per line of a study's plan.tsv."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (the study writes it in its first stage)")
    plan = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            cells = line.rstrip("\n").split("\t")
            if len(cells) != 4 or cells[1] not in ("run", "skipped"):
                raise ValueError(f"{path}:{k}: expected 'claim run|skipped arms note', got {line.strip()!r}")
            plan.append((cells[0], cells[1] == "run", [a for a in cells[2].split(",") if a], cells[3]))
    return plan


# ------------------------------------------------------------------------------- readers of job files
def read_lines(path: str) -> List[str]:
    """The lines of a text file (without their newlines); a missing file is an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (did its stage run?)")
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]


def parse_valid_log(path: str, subset: str = None) -> Dict[str, float]:
    """Metrics of the last ``valid on 'SUBSET' subset | name value | ...`` line of a fairseq log."""
    found = None
    for line in read_lines(path):
        m = VALID_LINE.search(line)
        if m and (subset is None or m.group(1) == subset):
            found = {k: float(v) for k, v in METRIC.findall(m.group(2))}
    if found is None:
        raise ValueError(f"{path}: no 'valid on {subset or '...'} subset' line (did fairseq-validate fail?)")
    return found


def read_score(path: str) -> float:
    """The single number in ``path`` (a sacrebleu --score-only output)."""
    text = "\n".join(read_lines(path)).strip()
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}: expected one number, found {text[:80]!r}") from None


def read_json(path: str) -> dict:
    """A JSON object written by a job."""
    try:
        obj = json.loads("\n".join(read_lines(path)))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return obj


def read_accuracy_table(path: str) -> Dict[str, float]:
    """{language: accuracy} of the last row of an evaluate_xnli markdown table."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in read_lines(path) if line.strip()]
    if len(rows) < 3 or rows[0][0] != "model":
        raise ValueError(f"{path}: not a table of python -m fairseq_xlm.cli.evaluate_xnli")
    header, last = rows[0], rows[-1]
    return {lang: float(v) for lang, v in zip(header[1:], last[1:]) if lang != "avg"}


# ------------------------------------------------------------------------------------ measures of a job
def ppl_measures(log: str, metric: str) -> Dict[str, float]:
    """{ppl_LANG: value} of ``metric`` (e.g. clm_ppl_ny) in a fairseq-validate log's 'test' line."""
    found = parse_valid_log(log, "test")
    if metric not in found:
        raise ValueError(f"{log}: no {metric} in its test line (has {sorted(found)})")
    return {f"ppl_{metric.rsplit('_', 1)[-1]}": found[metric]}


def retrieval_measures(path: str, pair: Tuple[str, str] = None) -> Dict[str, float]:
    """{p1_SRC_TGT, p1_TGT_SRC: P@1 %} of an ``evaluate_retrieval --json`` result file (of ``pair`` if given)."""
    result = read_json(path)
    if pair is not None and (result.get("src"), result.get("tgt")) != tuple(pair):
        raise ValueError(f"{path}: no {pair[0]}-{pair[1]} result (src {result.get('src')}, tgt {result.get('tgt')})")
    try:
        src, tgt = result["src"], result["tgt"]
        return {f"p1_{src}_{tgt}": 100 * float(result["p_at_1_src_tgt"]),
                f"p1_{tgt}_{src}": 100 * float(result["p_at_1_tgt_src"])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not an evaluate_retrieval --json result ({err})") from None


def genre_measures(table: str, langs: Sequence[str]) -> Dict[str, float]:
    """{acc_LANG: accuracy %} of the last row of an evaluate_xnli table, for ``langs``."""
    acc = read_accuracy_table(table)
    missing = [lang for lang in langs if lang not in acc]
    if missing:
        raise ValueError(f"{table}: no column for {missing} (columns: {sorted(acc)})")
    return {f"acc_{lang}": acc[lang] for lang in langs}


def bleu_measures(table: str, direction: str) -> Dict[str, float]:
    """{bleu_S_T, tok_bleu_S_T} from the first row of recipes/evaluate_mt.sh's table (the authors' greedy)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in read_lines(table)
            if line.startswith("|")]
    if len(rows) < 3 or rows[0][0] != "protocol":
        raise ValueError(f"{table}: not a table of recipes/evaluate_mt.sh")
    s, t = direction.split("-")
    return {f"bleu_{s}_{t}": float(rows[2][1]), f"tok_bleu_{s}_{t}": float(rows[2][2])}


def beats_copy_share(hyps: Sequence[str], srcs: Sequence[str], refs: Sequence[str]) -> float:
    """% of sentences whose translation has a higher sentence BLEU against the reference than the source
    copied unchanged (ties count as not beating it): does the model translate, or still copy?"""
    import sacrebleu

    if not (len(hyps) == len(srcs) == len(refs)) or not refs:
        raise ValueError(f"beats_copy_share: {len(hyps)} hypotheses, {len(srcs)} sources, {len(refs)} references")
    wins = sum(sacrebleu.sentence_bleu(h, [r]).score > sacrebleu.sentence_bleu(s, [r]).score
               for h, s, r in zip(hyps, srcs, refs))
    return 100.0 * wins / len(refs)


def bleu_over_shifted(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus sacreBLEU against the references minus corpus sacreBLEU against the same references shifted by
    one sentence (each hypothesis scored against the next sentence's reference). The shifted references keep
    every n-gram statistic of the text and break only the pairing, so the difference is the BLEU that the
    source explains: about 0 for a model that writes fluent target text whatever its input (a decoder that
    ignores the encoder), which plain BLEU cannot tell from a weak translator. Neighbouring test sentences
    often share words (one chapter), so this is a lower bound."""
    import sacrebleu

    if len(hyps) != len(refs) or len(refs) < 2:
        raise ValueError(f"bleu_over_shifted: {len(hyps)} hypotheses, {len(refs)} references (needs >= 2 pairs)")
    shifted = list(refs[1:]) + list(refs[:1])
    return sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score - sacrebleu.corpus_bleu(list(hyps), [shifted]).score


def copy_measures(hyp: str, src: str, ref: str, direction: str) -> Dict[str, float]:
    """{beats_copy_S_T, bleu_over_shifted_S_T} of a hypothesis file against its source and reference files."""
    s, t = direction.split("-")
    hyps, refs = read_lines(hyp), read_lines(ref)
    return {f"beats_copy_{s}_{t}": beats_copy_share(hyps, read_lines(src), refs),
            f"bleu_over_shifted_{s}_{t}": bleu_over_shifted(hyps, refs)}
