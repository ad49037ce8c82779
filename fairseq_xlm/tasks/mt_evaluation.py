"""What ``unsupervised_mt`` validates with: decoding ids to text, both BLEU flavours' n-gram statistics per
batch (decoded as the authors evaluate), and their corpus BLEU in fairseq's metrics."""

import logging
import os
from typing import List

import numpy as np
import torch
from fairseq import utils
from fairseq.data import data_utils
from fairseq.logging import metrics

from ..bleu import FLAVOURS, BleuScorer, bleu_from_stats, decode_reference
from ..data import authors_bpe
from ..data.backtranslation import translate

logger = logging.getLogger(__name__)

BLEU_ORDER = 4


class MtEvaluationMixin:
    """BLEU for a translation task with ``dictionary``, ``data_dir`` (its spm.model), ``lang_id`` and the
    ``eval_*`` options; the task sets ``_spm = None`` and ``_scorers = {}``."""

    def decode(self, tokens, reference: bool = False, lang: str = "en") -> str:
        """Token ids of ``lang`` -> detokenized text with the data-bin's spm.model or authors' BPE (fairseq's
        sentencepiece rule without either); a reference's <unk> becomes the word ``<<unk>>``, which BLEU never
        matches (the authors' rule)."""
        pieces = self.dictionary.string(tokens.int().cpu() if torch.is_tensor(tokens) else tokens,
                                        unk_string="<unk>").split()
        if reference:
            return decode_reference(pieces, lambda p: self._decode_pieces(p, lang), unk="<unk>")
        return self._decode_pieces(pieces, lang)

    def _decode_pieces(self, pieces: List[str], lang: str) -> str:
        if self._spm is None:
            spm_path = os.path.join(self.data_dir, "spm.model")
            if os.path.isdir(os.path.join(self.data_dir, authors_bpe.FOLDER)):  # prepare --bpe authors
                self._spm = authors_bpe.AuthorsBpe(os.path.join(self.data_dir, authors_bpe.FOLDER))
            elif os.path.isfile(spm_path):
                import sentencepiece

                self._spm = sentencepiece.SentencePieceProcessor(model_file=spm_path)
            else:
                logger.warning("%s missing: decoding with fairseq's sentencepiece rule", spm_path)
                self._spm = False
        if isinstance(self._spm, authors_bpe.AuthorsBpe):
            return self._spm.decode(pieces, lang)
        if self._spm:
            return self._spm.decode_pieces(pieces)
        return data_utils.post_process(" ".join(pieces), "sentencepiece")

    def _bleu_stats(self, model, sample, src: str, tgt: str) -> dict:
        """N-gram statistics of both BLEU flavours for one batch, decoded as the authors evaluate:
        greedy by default, at most int(a * source width + b) tokens (--eval-max-len-a/b)."""
        hyps = translate(model, sample["net_input"], self.lang_id(tgt), self.cfg.eval_bleu_beam,
                         self.cfg.eval_max_len_a, self.cfg.eval_max_len_b)
        pad = self.dictionary.pad()
        hyp_text = [self.decode(h, lang=tgt) for h in hyps]
        ref_text = [self.decode(utils.strip_pad(t, pad), reference=True, lang=tgt) for t in sample["target"]]
        if self.cfg.eval_bleu_print_samples:
            logger.info("%s->%s hypothesis: %s | reference: %s", src, tgt, hyp_text[0], ref_text[0])
        if tgt not in self._scorers:
            self._scorers[tgt] = BleuScorer(tgt)
        stats = {}
        for flavour, bleu in self._scorers[tgt].score(hyp_text, ref_text).items():
            tag = f"_{flavour}_{src}_{tgt}"
            stats[f"{tag}_sys_len"] = bleu.sys_len
            stats[f"{tag}_ref_len"] = bleu.ref_len
            for i in range(BLEU_ORDER):
                stats[f"{tag}_counts_{i}"] = bleu.counts[i]
                stats[f"{tag}_totals_{i}"] = bleu.totals[i]
        return stats



def log_bleu_metrics(logging_outputs) -> None:
    """``bleu_{src}_{tgt}`` (sacreBLEU) and ``tok_bleu_{src}_{tgt}`` (tokenized) from summed statistics."""

    def total(key):
        return sum(float(log.get(key, 0)) for log in logging_outputs)

    keys = sorted({k for log in logging_outputs for k in log})
    for flavour in FLAVOURS:
        prefix = f"_{flavour}_"
        for direction in sorted({k[len(prefix):-len("_sys_len")] for k in keys
                                 if k.startswith(prefix) and k.endswith("_sys_len")}):
            tag = f"{prefix}{direction}"
            totals = np.array([total(f"{tag}_totals_{i}") for i in range(BLEU_ORDER)])
            if totals.max() <= 0:
                continue
            counts = np.array([total(f"{tag}_counts_{i}") for i in range(BLEU_ORDER)])
            metrics.log_scalar(f"{tag}_counts", counts)
            metrics.log_scalar(f"{tag}_totals", totals)
            metrics.log_scalar(f"{tag}_sys_len", total(f"{tag}_sys_len"))
            metrics.log_scalar(f"{tag}_ref_len", total(f"{tag}_ref_len"))
            metrics.log_derived(f"{flavour}_{direction}",
                                lambda meters, tag=tag, flavour=flavour: _derive_bleu(meters, tag, flavour))


def _derive_bleu(meters, tag: str, flavour: str) -> float:
    """Corpus BLEU of one flavour from the n-gram statistics summed over batches (and workers)."""
    return round(bleu_from_stats(flavour, meters[f"{tag}_counts"].sum, meters[f"{tag}_totals"].sum,
                                 meters[f"{tag}_sys_len"].sum, meters[f"{tag}_ref_len"].sum), 2)
