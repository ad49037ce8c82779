"""Task ``xlm_pretrain``: CLM, MLM and TLM mixed by a step language, as in Lample & Conneau (2019).

``--clm-steps en,es`` trains causal LM on monolingual streams, ``--mlm-steps en,es,en-es`` masked LM on
streams (``en``) and translation LM on parallel pairs (``en-es``).

``fairseq-eval-lm DATA --task xlm_pretrain --langs en,es --clm-steps es --path CKPT`` scores the CLM steps'
validation blocks (``eval_lm_dataloader``): its perplexity is ``fairseq-validate``'s ``clm_ppl_es`` (one step
at a time gives each language's; several give their pooled ``ppl``).

The schedule is the authors' (``tasks/scheduled.py``): per iteration, the CLM steps, then the MLM/TLM
steps, each drawn by ``shuf_order`` (monolingual steps and pairs apart, ``min(5, n)`` draws with
replacement, uniform or alpha-smoothed); each drawn step is ONE fairseq update, i.e. one optimiser step on
``lambda x mean loss`` of that step's batch. ``--lambda-clm`` / ``--lambda-mlm`` follow the iteration
count (``sample["iteration"]``, the authors' ``n_total_iter``), the learning rate the update count.
"""

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from functools import partial

from fairseq.data import iterators
from fairseq.tasks import register_task

from ..data import layout
from ..data.lm_datasets import CausalTargetDataset, MonoStreamDataset, TlmPairDataset, XlmMaskDataset, collate_lm
from ..data.schedule import StepGroup, smoothed_probs
from ..data.step_dataset import StepDataset
from ..data.token_stream import StreamBlockDataset, TokenStream
from ..errors import ConfigError
from ..models import memory_usage
from ..precision import autocast_bf16
from ..schedules import parse_schedule
from . import frozen_rows
from .scheduled import ScheduleConfig, ScheduledStepsTask

logger = logging.getLogger(__name__)


@dataclass
class XlmPretrainConfig(ScheduleConfig):
    """Data, step language, masking and sampling of XLM pretraining."""

    data: str = field(default="", metadata={"help": "data-bin directory made by fairseq_xlm.cli.prepare"})
    langs: str = field(default="", metadata={"help": "comma-separated languages; their order gives the "
                                                      "language ids (keep it for fine-tuning)"})
    clm_steps: str = field(default="", metadata={"help": "causal LM steps, e.g. 'en,es' (a pair 'en-es' "
                                                         "streams parallel sentences)"})
    mlm_steps: str = field(default="", metadata={"help": "masked LM steps, e.g. 'en,es,en-es'; a pair is TLM"})
    tokens_per_sample: int = field(default=256, metadata={"help": "stream block length (the authors' bptt); "
                                                                  "TLM pairs longer than this are skipped"})
    max_pair_tokens: int = field(default=0, metadata={
        "help": "longest parallel pair (both sides with their </s>) a pair step holds, if not --tokens-per-sample "
                "(0): lets short stream blocks go with whole pairs (positions restart on each side)"})
    mask_prob: float = field(default=0.15, metadata={"help": "share of tokens to predict (word_pred)"})
    leave_unmasked_prob: float = field(default=0.1, metadata={"help": "of predicted tokens, share kept as is"})
    random_token_prob: float = field(default=0.1, metadata={"help": "of predicted tokens, share replaced by "
                                                                    "a random token"})
    mask_sample_alpha: float = field(default=0.0, metadata={
        "help": "choose tokens to predict with probability ∝ count**-alpha (the authors' sample_alpha); 0 = uniform"})
    max_len: int = field(default=100, metadata={
        "help": "training TLM pairs with a side longer than this many tokens (without </s>) are removed, as the "
                "authors' --max_len; 0 = no limit"})
    lambda_clm: str = field(default="1", metadata={"help": "weight of CLM steps: a constant or a schedule "
                                                           "'0:1,10000:0.1' (iteration:value, linear between)"})
    lambda_mlm: str = field(default="1", metadata={"help": "weight of MLM/TLM steps (constant or schedule)"})
    freeze_old_embeddings: int = field(default=0, metadata={
        "help": "for the first N updates, keep the token embeddings and output biases of the vocabulary before "
                "fairseq_xlm.cli.add_language grew it (the data-bin's add_language.json) unchanged; 0 = off"})


def parse_steps(spec: str, langs: List[str], flag: str) -> List[Tuple[str, Optional[str]]]:
    """'en,es,en-es' -> [('en', None), ('es', None), ('en', 'es')], checked against --langs."""
    steps = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        names = part.split("-")
        if len(names) > 2 or not all(names):
            raise ConfigError(f"{flag}: invalid step {part!r} (use 'en' or 'en-es')")
        unknown = [n for n in names if n not in langs]
        if unknown:
            raise ConfigError(f"{flag}: language(s) {unknown} of step {part!r} are not in --langs {','.join(langs)}")
        if len(names) == 2 and names[0] == names[1]:
            raise ConfigError(f"{flag}: step {part!r} pairs a language with itself")
        step = (names[0], names[1] if len(names) == 2 else None)
        if step in steps:
            raise ConfigError(f"{flag}: step {part!r} is given twice")
        steps.append(step)
    return steps


def step_name(objective: str, l1: str, l2: Optional[str]) -> str:
    """clm_en, mlm_es, tlm_en-es (a CLM step on a pair is clm_en-es)."""
    if l2 is None:
        return f"{objective}_{l1}"
    return f"{'tlm' if objective == 'mlm' else objective}_{l1}-{l2}"


@register_task("xlm_pretrain", dataclass=XlmPretrainConfig)
class XlmPretrainTask(ScheduledStepsTask):
    """XLM pretraining: one dataset of all steps; one fairseq update is one step (see the module doc)."""

    def __init__(self, cfg: XlmPretrainConfig, dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.mask_idx = dictionary.index(layout.MASK)
        self.langs = layout.parse_langs(cfg.langs)
        self.steps = {
            "clm": parse_steps(cfg.clm_steps, self.langs, "--clm-steps"),
            "mlm": parse_steps(cfg.mlm_steps, self.langs, "--mlm-steps"),
        }
        if not self.steps["clm"] and not self.steps["mlm"]:
            raise ConfigError("give at least one of --clm-steps / --mlm-steps")
        self.lambdas = {
            "clm": parse_schedule(cfg.lambda_clm, "--lambda-clm"),
            "mlm": parse_schedule(cfg.lambda_mlm, "--lambda-mlm"),
        }
        self.step_names = [step_name(obj, l1, l2) for obj, steps in self.steps.items() for l1, l2 in steps]
        self.frozen = frozen_rows.build(layout.shard_dirs(cfg.data)[0], cfg.freeze_old_embeddings) \
            if cfg.data else None

    @classmethod
    def setup_task(cls, cfg: XlmPretrainConfig, **kwargs):
        if not cfg.data:
            raise ConfigError("xlm_pretrain needs the data-bin directory as the first argument of fairseq-train")
        dictionary = layout.load_dictionary(layout.shard_dirs(cfg.data)[0])
        logger.info("dictionary: %d types (with %s)", len(dictionary), layout.MASK)
        return cls(cfg, dictionary)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def objective(self, name: str) -> str:
        return "clm" if name.startswith("clm") else "mlm"

    def _missing(self, data_dir: str, split: str, what: str):
        mono, pairs = layout.available(data_dir, split)
        return ConfigError(
            f"no {what} for split '{split}' in {data_dir} (it has monolingual: {', '.join(mono) or 'none'}; "
            f"parallel: {', '.join(pairs) or 'none'})"
        )

    def _step_dataset(self, data_dir: str, split: str, objective: str, l1: str, l2: Optional[str]):
        """(dataset, costs, sentences for language sampling, training samples to keep or None for all)."""
        cfg, d = self.cfg, self.dictionary
        ids = {lang: i for i, lang in enumerate(self.langs)}
        if l2 is None:
            prefix = layout.mono_prefix(data_dir, split, l1)
            if not os.path.exists(prefix + ".bin"):
                raise self._missing(data_dir, split, f"monolingual data for '{l1}'")
            # the .bin is the stream (sentences end in </s>); blocks are cut from it, no index array is built
            layout.check_split(prefix, d, data_dir)
            stream = TokenStream(prefix, f"monolingual {l1} text")
            blocks = StreamBlockDataset(stream, cfg.tokens_per_sample)
            base, costs, sentences, keep = MonoStreamDataset(blocks, ids[l1]), blocks.costs, stream.sentences, None
        else:
            sides = [layout.para_prefix(data_dir, split, l1, l2, lang) for lang in (l1, l2)]
            if None in sides:
                raise self._missing(data_dir, split, f"parallel data for '{l1}-{l2}'")
            src, tgt = (layout.load_split(p, d, data_dir, f"parallel {l1}-{l2} text") for p in sides)
            layout.check_parallel(src, tgt, *sides)
            base, sentences = TlmPairDataset(src, tgt, ids[l1], ids[l2], d.eos()), len(src)
            costs = base.sizes
            keep = self._keep_pairs(split, f"{l1}-{l2}", np.asarray(src.sizes), np.asarray(tgt.sizes))
        if objective == "clm":
            return CausalTargetDataset(base, d.pad()), costs, sentences, keep
        return XlmMaskDataset(base, d, self.mask_idx, cfg.seed, cfg.mask_prob, cfg.leave_unmasked_prob,
                              cfg.random_token_prob, cfg.mask_sample_alpha), costs, sentences, keep

    def _keep_pairs(self, split: str, pair: str, src_sizes: np.ndarray, tgt_sizes: np.ndarray) -> np.ndarray:
        """Pairs a batch may hold: within --max-pair-tokens (default --tokens-per-sample); in training also the
        authors' filter (no empty side, no side over --max-len tokens)."""
        total = src_sizes + tgt_sizes + 2
        ok = total <= self.max_pair_tokens
        if split == "train":
            ok &= (src_sizes > 1) & (tgt_sizes > 1)  # sizes count the final </s>
            if self.cfg.max_len > 0:
                ok &= (src_sizes - 1 <= self.cfg.max_len) & (tgt_sizes - 1 <= self.cfg.max_len)
        if not ok.all():
            limit = "--max-pair-tokens" if self.cfg.max_pair_tokens else "--tokens-per-sample"
            logger.warning("%s %s: %d of %d pairs removed (empty, over --max-len %d or %s %d)",
                           split, pair, int((~ok).sum()), len(ok), self.cfg.max_len, limit, self.max_pair_tokens)
        return np.flatnonzero(ok)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """The split's steps from ``layout.split_dir`` (a sharded training set: this epoch's shard)."""
        data_dir = layout.split_dir(self.cfg.data, split, epoch)
        if data_dir != self.cfg.data:
            logger.info("%s: epoch %d reads %s", split, epoch, data_dir)
        steps, collaters, costs, keep, sentences = OrderedDict(), {}, {}, {}, {}
        for objective, pairs in self.steps.items():
            for l1, l2 in pairs:
                name = step_name(objective, l1, l2)
                steps[name], costs[name], sentences[name], keep[name] = self._step_dataset(
                    data_dir, split, objective, l1, l2)
                collaters[name] = partial(collate_lm, pad=self.dictionary.pad(), causal=objective == "clm",
                                          step=name)
        self.datasets[split] = StepDataset(steps, collaters, costs, keep, sentences)
        for name in steps:
            logger.info("%s %s: %d samples", split, name, self.datasets[split].kept(name))

    def step_groups(self, dataset: StepDataset):
        """Per objective (CLM, then MLM/TLM): monolingual steps, then pairs, each sampled as shuf_order."""
        groups = []
        for objective, pairs in self.steps.items():
            for want_pair in (False, True):
                names = [step_name(objective, l1, l2) for l1, l2 in pairs if (l2 is not None) == want_pair]
                if names:
                    probs = smoothed_probs([dataset.sentences[n] for n in names], self.cfg.lang_sampling_alpha)
                    groups.append(StepGroup([dataset.names.index(n) for n in names], True, probs))
        return groups

    def step_weight(self, name: str, iteration: int) -> float:
        return float(self.lambdas[self.objective(name)](iteration))

    @property
    def max_pair_tokens(self) -> int:
        return self.cfg.max_pair_tokens or self.cfg.tokens_per_sample

    def max_positions(self):
        return max(self.cfg.tokens_per_sample, self.max_pair_tokens)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None, num_shards=1,
                           shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        """``fairseq-eval-lm``'s batches: every block of the split's CLM steps once, as validation cuts and
        scores them (the block's last position predicts nothing), so the perplexity equals ``fairseq-validate``'s
        (``clm_ppl_{lang}`` for one --clm-steps language, the pooled ``ppl`` for several)."""
        if context_window > 0:
            raise ValueError(f"--context-window {context_window}: xlm_pretrain scores the fixed "
                             f"--tokens-per-sample blocks that fairseq-validate scores; leave it at 0")
        clm = {k for k, name in enumerate(dataset.names) if self.objective(name) == "clm"}
        if not clm:
            raise ValueError("fairseq-eval-lm scores causal LM steps, and this run has none: give --clm-steps "
                             "with the language(s) to score (e.g. --clm-steps en)")
        batches = [b for b in dataset.validation_batches(max_tokens, batch_size) if b[0].step in clm]

        def collate(samples):
            batch = dataset.collater(samples)
            if batch:  # eval-lm names each scored block by its id
                batch["id"] = torch.tensor([draw.index for draw, _ in samples], dtype=torch.long)
            return batch

        return iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=collate, batch_sampler=batches, num_shards=num_shards, shard_id=shard_id,
            num_workers=num_workers, buffer_size=data_buffer_size, disable_shuffling=True,
        ).next_epoch_itr(shuffle=False)

    def _run_step(self, sample, model, criterion, weight: float, backward=None):
        """Criterion on one step batch; the logging output holds every step's keys (zeros for the others)."""
        with autocast_bf16(self.cfg.autocast_bf16, model):
            loss, sample_size, log = criterion(model, sample)
        if backward is not None:
            backward(loss * weight)
        for key in criterion.zero_log(self.step_names):
            log.setdefault(key, 0)
        return loss.detach(), sample_size, memory_usage.collect(model, log)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """One step: gradient of lambda x (summed loss); fairseq divides by the predicted tokens -> mean."""
        model.train()
        model.set_num_updates(update_num)
        weight = self.step_weight(sample["step"], sample["iteration"])
        if self.frozen is not None:
            self.frozen.start(model, update_num)

        def backward(loss):
            if ignore_grad:
                loss = loss * 0
            with torch.autograd.profiler.record_function("backward"):
                optimizer.backward(loss)
            if self.frozen is not None:
                self.frozen.after_backward()

        return self._run_step(sample, model, criterion, weight, backward)

    def valid_step(self, sample, model, criterion):
        model.eval()
        with torch.no_grad():
            return self._run_step(sample, model, criterion, 1.0)
