"""BLEU two ways, side by side, so that nobody compares one with the other.

``bleu``      sacreBLEU (detok): sacrebleu's defaults (13a tokenizer, exp smoothing) on detokenized text;
              comparable across papers that report sacreBLEU.
``tok_bleu``  tokenized BLEU (multi-bleu.perl-style): what the XLM paper's MT tables report. Hypothesis and
              reference go through the authors' preprocessing (get-data-nmt.sh: replace-unicode-punctuation,
              normalize-punctuation -l LANG, remove-non-printing-char, tokenizer -l LANG -no-escape; here with
              sacremoses), then multi-bleu.perl's count: whitespace-split tokens, no smoothing, so an n-gram
              order without any match gives 0. On the same tokenized text it equals multi-bleu.perl except
              where the perl script fails: an empty hypothesis corpus is 0 here, a division by zero there.

Both tokenize here and count n-grams with sacrebleu (``tokenize="none"``): for references without
``<<unk>>`` the ``bleu`` flavour equals ``sacrebleu.corpus_bleu``. A reference's ``<unk>`` is written
``<<unk>>`` (``decode_reference``), the authors' rule (evaluator.py) so that it never matches: it stays one
token, which no tokenized hypothesis can contain (both tokenizers split ``<`` off). Hypotheses keep their
``<unk>`` (sentencepiece writes it ``⁇``).
"""

from typing import Callable, List, Sequence


FLAVOURS = ("bleu", "tok_bleu")
LABELS = {"bleu": "sacreBLEU (detok)", "tok_bleu": "tokenized BLEU (multi-bleu.perl-style)"}
SMOOTH = {"bleu": "exp", "tok_bleu": "none"}
REF_UNK = "<<unk>>"
# Stands for REF_UNK while tokenizing: letters, so both tokenizers keep it whole; upper case, because Moses
# keeps a period attached to a word followed by a lower-case one, and the hypotheses' ⁇ is not lower case.
_SLOT = "XLMREFUNKSLOT"


def decode_reference(pieces: Sequence[str], decode: Callable[[List[str]], str], unk: str = "<unk>") -> str:
    """Reference pieces -> text with ``decode`` (e.g. sentencepiece's ``decode_pieces``), each ``unk`` piece
    written as the word ``<<unk>>`` (where sentencepiece would write the word ``⁇``)."""
    parts, segment = [], []
    for piece in pieces:
        if piece == unk:
            parts += [decode(segment), REF_UNK]
            segment = []
        else:
            segment.append(piece)
    parts.append(decode(segment))
    return " ".join(p.strip() for p in parts if p.strip())


class BleuScorer:
    """Tokenizes text of one language for both flavours and scores hypotheses against references."""

    def __init__(self, lang: str):
        import regex
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
        from sacremoses import MosesPunctNormalizer, MosesTokenizer

        self.lang = lang
        self._normalizer = MosesPunctNormalizer(lang, pre_replace_unicode_punct=True)
        self._moses = MosesTokenizer(lang)
        self._13a = Tokenizer13a()
        # remove-non-printing-char.perl turns each control/format character into a space (sacremoses drops it)
        self._control = regex.compile(r"\p{C}")

    def tokenize(self, text: str, flavour: str) -> str:
        """``text`` as the flavour's n-gram counter sees it (space-separated tokens)."""
        if flavour == "bleu":
            return self._13a(text.rstrip())  # what sacrebleu.corpus_bleu does to each line
        if flavour == "tok_bleu":
            text = self._control.sub(" ", self._normalizer.normalize(text))
            return self._moses.tokenize(text, escape=False, return_str=True)
        raise ValueError(f"unknown BLEU flavour {flavour!r} (expected one of {', '.join(FLAVOURS)})")

    def tokenize_ref(self, text: str, flavour: str) -> str:
        """Like ``tokenize``, keeping each ``<<unk>>`` whole (and so unmatchable)."""
        return self.tokenize(text.replace(REF_UNK, _SLOT), flavour).replace(_SLOT, REF_UNK)

    def score(self, hyps: Sequence[str], refs: Sequence[str]):
        """{flavour: sacrebleu BLEUScore} of detokenized hypotheses against one reference each."""
        from sacrebleu.metrics import BLEU

        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
        out = {}
        for flavour in FLAVOURS:
            metric = BLEU(tokenize="none", smooth_method=SMOOTH[flavour])
            out[flavour] = metric.corpus_score([self.tokenize(h, flavour) for h in hyps],
                                               [[self.tokenize_ref(r, flavour) for r in refs]])
        return out


def bleu_from_stats(flavour: str, correct, total, sys_len: int, ref_len: int) -> float:
    """The flavour's corpus BLEU from summed n-gram statistics (for totals gathered over batches)."""
    from sacrebleu.metrics import BLEU

    return BLEU.compute_bleu(correct=list(correct), total=list(total), sys_len=int(sys_len), ref_len=int(ref_len),
                             smooth_method=SMOOTH[flavour]).score
