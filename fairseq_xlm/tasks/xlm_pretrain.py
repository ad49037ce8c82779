"""Task ``xlm_pretrain``: CLM, MLM and TLM mixed by a step language, as in Lample & Conneau (2019).

``--clm-steps en,es`` trains causal LM on monolingual streams, ``--mlm-steps en,es,en-es`` masked LM on
streams (``en``) and translation LM on parallel pairs (``en-es``).

How an update combines step kinds: the authors run one optimizer step per step kind in turn; we put one
batch of every step of an update into a single fairseq update, back-propagate each with its weight
(``--lambda-clm``, ``--lambda-mlm``) and take one optimizer step on the accumulated gradient. This keeps
fairseq's trainer intact (one gradient clip, one fp16 loss-scale check and, on several GPUs, one gradient
all-reduce per update instead of one per kind) and makes ``--update-freq`` and data parallelism exact:
the gradient is ``sum_k lambda_k * sum(token losses of k) / (number of predicted tokens)``, so a 2-GPU update
equals a 1-GPU update with ``--update-freq 2`` on the same batches. The price: with Adam, one
combined step is not identical to K sequential steps; at XLM's small learning rates the difference is
second-order, and each kind still contributes the same number of gradient terms.
"""

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from fairseq.data import TokenBlockDataset, data_utils, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..data import layout
from ..data.lm_datasets import CausalTargetDataset, MonoStreamDataset, TlmPairDataset, XlmMaskDataset
from ..data.step_dataset import XlmStepDataset
from ..schedules import parse_schedule

logger = logging.getLogger(__name__)


@dataclass
class XlmPretrainConfig(FairseqDataclass):
    """Data, step language, masking and sampling of XLM pretraining."""

    data: str = field(default="", metadata={"help": "data-bin directory made by fairseq_xlm.prepare"})
    langs: str = field(default="", metadata={"help": "comma-separated languages; their order gives the "
                                                      "language ids (keep it for fine-tuning)"})
    clm_steps: str = field(default="", metadata={"help": "causal LM steps, e.g. 'en,es' (a pair 'en-es' "
                                                         "streams parallel sentences)"})
    mlm_steps: str = field(default="", metadata={"help": "masked LM steps, e.g. 'en,es,en-es'; a pair is TLM"})
    tokens_per_sample: int = field(default=256, metadata={"help": "stream block length (the authors' bptt); "
                                                                  "TLM pairs longer than this are skipped"})
    mask_prob: float = field(default=0.15, metadata={"help": "share of tokens to predict (word_pred)"})
    leave_unmasked_prob: float = field(default=0.1, metadata={"help": "of predicted tokens, share kept as is"})
    random_token_prob: float = field(default=0.1, metadata={"help": "of predicted tokens, share replaced by "
                                                                    "a random token"})
    mask_sample_alpha: float = field(default=0.0, metadata={
        "help": "choose tokens to predict with probability ∝ count**-alpha (the authors' sample_alpha); 0 = uniform"})
    lang_sampling_alpha: float = field(default=-1.0, metadata={
        "help": "alpha of the smoothed language distribution q ∝ p**alpha used to pick the steps of an update "
                "(the authors' lg_sampling_factor); < 0 = every step in every update"})
    lambda_clm: str = field(default="1", metadata={"help": "weight of CLM steps: a constant or a schedule "
                                                           "'0:1,10000:0.1' (update:value, linear between)"})
    lambda_mlm: str = field(default="1", metadata={"help": "weight of MLM/TLM steps (constant or schedule)"})
    seed: int = II("common.seed")


def parse_steps(spec: str, langs: List[str], flag: str) -> List[Tuple[str, Optional[str]]]:
    """'en,es,en-es' -> [('en', None), ('es', None), ('en', 'es')], checked against --langs."""
    steps = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        names = part.split("-")
        if len(names) > 2 or not all(names):
            raise ValueError(f"{flag}: invalid step {part!r} (use 'en' or 'en-es')")
        unknown = [n for n in names if n not in langs]
        if unknown:
            raise ValueError(f"{flag}: language(s) {unknown} of step {part!r} are not in --langs {','.join(langs)}")
        if len(names) == 2 and names[0] == names[1]:
            raise ValueError(f"{flag}: step {part!r} pairs a language with itself")
        step = (names[0], names[1] if len(names) == 2 else None)
        if step in steps:
            raise ValueError(f"{flag}: step {part!r} is given twice")
        steps.append(step)
    return steps


def step_name(objective: str, l1: str, l2: Optional[str]) -> str:
    """clm_en, mlm_es, tlm_en-es (a CLM step on a pair is clm_en-es)."""
    if l2 is None:
        return f"{objective}_{l1}"
    return f"{'tlm' if objective == 'mlm' else objective}_{l1}-{l2}"


@register_task("xlm_pretrain", dataclass=XlmPretrainConfig)
class XlmPretrainTask(FairseqTask):
    """XLM pretraining: one dataset of all steps; one fairseq update runs a batch of each chosen step."""

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
            raise ValueError("give at least one of --clm-steps / --mlm-steps")
        self.lambdas = {
            "clm": parse_schedule(cfg.lambda_clm, "--lambda-clm"),
            "mlm": parse_schedule(cfg.lambda_mlm, "--lambda-mlm"),
        }
        self.step_names = [step_name(obj, l1, l2) for obj, steps in self.steps.items() for l1, l2 in steps]

    @classmethod
    def setup_task(cls, cfg: XlmPretrainConfig, **kwargs):
        if not cfg.data:
            raise ValueError("xlm_pretrain needs the data-bin directory as the first argument of fairseq-train")
        dictionary = layout.load_dictionary(cfg.data.split(os.pathsep)[0])
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

    def _load_indexed(self, prefix: str, what: str):
        if not os.path.exists(prefix + ".bin"):
            return None
        if os.path.getsize(prefix + ".bin") == 0:  # numpy cannot even mmap it
            raise ValueError(f"{prefix}.bin: {what} is empty")
        ds = data_utils.load_indexed_dataset(prefix, self.dictionary, None)
        if ds is None or len(ds) == 0:
            raise ValueError(f"{prefix}.bin: {what} is empty")
        return ds

    def _missing(self, split: str, what: str):
        mono, pairs = layout.available(self.cfg.data, split)
        return ValueError(
            f"no {what} for split '{split}' in {self.cfg.data} (it has monolingual: {', '.join(mono) or 'none'}; "
            f"parallel: {', '.join(pairs) or 'none'})"
        )

    def _step_dataset(self, split: str, objective: str, l1: str, l2: Optional[str]):
        cfg, d = self.cfg, self.dictionary
        ids = {lang: i for i, lang in enumerate(self.langs)}
        if l2 is None:
            mono = self._load_indexed(layout.mono_prefix(cfg.data, split, l1), f"monolingual {l1} text")
            if mono is None:
                raise self._missing(split, f"monolingual data for '{l1}'")
            # fairseq's sizes include the </s> that ends each sentence: the stream has separators.
            blocks = TokenBlockDataset(mono, mono.sizes, cfg.tokens_per_sample, pad=d.pad(), eos=d.eos(),
                                       break_mode="none")
            base = MonoStreamDataset(blocks, ids[l1])
        else:
            sides = [layout.para_prefix(cfg.data, split, l1, l2, lang) for lang in (l1, l2)]
            if None in sides:
                raise self._missing(split, f"parallel data for '{l1}-{l2}'")
            src, tgt = (self._load_indexed(p, f"parallel {l1}-{l2} text") for p in sides)
            base = TlmPairDataset(src, tgt, ids[l1], ids[l2], d.eos())
            too_long = int((base.sizes > cfg.tokens_per_sample).sum())
            if too_long:
                logger.warning("%s %s-%s: %d of %d pairs exceed --tokens-per-sample %d and are skipped",
                               split, l1, l2, too_long, len(base), cfg.tokens_per_sample)
        if objective == "clm":
            return CausalTargetDataset(base, d.pad())
        return XlmMaskDataset(base, d, self.mask_idx, cfg.seed, cfg.mask_prob, cfg.leave_unmasked_prob,
                              cfg.random_token_prob, cfg.mask_sample_alpha)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        steps, causal, groups = OrderedDict(), {}, {}
        for objective, pairs in self.steps.items():
            for l1, l2 in pairs:
                name = step_name(objective, l1, l2)
                ds = self._step_dataset(split, objective, l1, l2)
                steps[name] = ds
                causal[name] = objective == "clm"
                groups[name] = f"{objective}:{'pair' if l2 else 'mono'}"
                logger.info("%s %s: %d samples", split, name, len(ds))
        self.datasets[split] = XlmStepDataset(steps, self.dictionary.pad(), causal, groups)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           skip_remainder_batch=False, grouped_shuffling=False, update_epoch_batch_itr=False):
        """Super-batches rebuilt every epoch (language draws change); identical on every rank."""
        if not isinstance(dataset, XlmStepDataset):
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch, data_buffer_size,
                disable_iterator_cache, skip_remainder_batch, grouped_shuffling, update_epoch_batch_itr)
        validation = dataset is not self.datasets.get("train")
        dataset.set_epoch(epoch)

        def make_batches(ds, ep):
            return ds.make_batches(ep, seed, self.cfg.lang_sampling_alpha, max_tokens, max_sentences,
                                   required_batch_size_multiple, self.cfg.tokens_per_sample, validation)

        return iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater, batch_sampler=make_batches, seed=seed,
            num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
            buffer_size=data_buffer_size, skip_remainder_batch=skip_remainder_batch,
        )

    def max_positions(self):
        return self.cfg.tokens_per_sample

    def _run_steps(self, sample, model, criterion, update_num: int, backward=None):
        """Criterion on each step batch; returns summed (loss, sample_size, logging output)."""
        total_loss, total_size, log = 0.0, 0, {}
        for name, batch in sample.items():
            weight = self.lambdas[self.objective(name)](update_num)
            if weight == 0 and backward is not None:
                continue
            loss, sample_size, step_log = criterion(model, batch)
            if backward is not None:
                backward(loss * weight)
            total_loss += loss.detach()
            total_size += sample_size
            for key, value in step_log.items():
                log[key] = log.get(key, 0) + value
        for key in criterion.zero_log(self.step_names):
            log.setdefault(key, 0)
        return total_loss, total_size, log

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)

        def backward(loss):
            if ignore_grad:
                loss = loss * 0
            with torch.autograd.profiler.record_function("backward"):
                optimizer.backward(loss)

        return self._run_steps(sample, model, criterion, update_num, backward)

    def valid_step(self, sample, model, criterion):
        model.eval()
        with torch.no_grad():
            return self._run_steps(sample, model, criterion, 0)
