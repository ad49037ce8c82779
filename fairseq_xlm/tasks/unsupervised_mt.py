"""Task ``unsupervised_mt``: denoising auto-encoding, online back-translation and supervised MT steps.

The step language is the authors': ``--ae-steps en,es`` (rebuild a sentence from a noised copy),
``--bt-steps en-es-en,es-en-es`` (translate real ``en`` into ``es`` with the current model, then learn
``es -> en`` on that pair), ``--mt-steps en-es`` (parallel data). Each kind has a weight, a constant or a
piecewise-linear schedule (``--lambda-ae '0:1,100000:0.1,300000:0'``).

The schedule is the authors' (``tasks/scheduled.py``): per iteration, every AE step (in random order),
then ``min(5, n)`` MT steps drawn as ``shuf_order`` (uniform, or alpha-smoothed by pair sizes), then every
BT step (random order); each step is ONE fairseq update, one optimiser step on ``lambda x mean token loss``
of its batch. Lambdas follow the iteration count, the learning rate the update count. Each step has its
own batches, cut by summed length (``len + 2`` per sentence, ``len1 + len2 + 4`` per pair, as the authors)
up to ``--max-tokens``, reshuffled at every pass; training sentences longer than ``--max-len`` are dropped.
Encoder inputs are ``</s> s </s>`` as the authors feed them; AE noise is drawn anew at every use.

The decoder learns the target language from ``tgt_langs`` (its language embedding, added at every
position) and always starts with ``</s>``, as in both fairseq and the authors' code; no language token is
added to the vocabulary, so XLM checkpoints fit as they are.
"""

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import LanguagePairDataset
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.tasks import register_task

from ..data import layout
from ..data.backtranslation import backtranslate_sample
from ..data.lang_pair import DrawnPairs, KeyedDatasets, LangPairDataset, SourceDataset
from ..data.noise import WordNoiseDataset
from ..data.schedule import StepGroup, smoothed_probs
from ..data.step_dataset import StepDataset
from ..models import memory_usage
from ..precision import autocast_bf16
from ..schedules import parse_schedule
from ..errors import ConfigError, MissingFileError
from .mt_evaluation import MtEvaluationMixin, log_bleu_metrics
from .mt_inference import MtInferenceMixin
from .scheduled import ScheduleConfig, ScheduledStepsTask

logger = logging.getLogger(__name__)


@dataclass
class UnsupervisedMtConfig(ScheduleConfig):
    """Data, steps, noise, back-translation and evaluation of unsupervised (and supervised) MT."""

    data: str = field(default="", metadata={"help": "data-bin directory made by fairseq_xlm.cli.prepare"})
    langs: Optional[str] = field(default=None, metadata={
        "help": "languages in language-embedding order, as in pretraining (e.g. en,es); default: the "
                "checkpoint's (fairseq-generate), else the data-bin's languages sorted"})
    ae_steps: str = field(default="", metadata={"help": "denoising auto-encoding steps, e.g. 'en,es'"})
    bt_steps: str = field(default="", metadata={"help": "back-translation steps 'a-b-a', e.g. 'en-es-en,es-en-es'"})
    mt_steps: str = field(default="", metadata={"help": "supervised MT steps on parallel data, e.g. 'en-es'"})
    lambda_ae: str = field(default="1", metadata={"help": "weight of AE steps: constant or 'iteration:value,...'"})
    lambda_bt: str = field(default="1", metadata={"help": "weight of BT steps: constant or 'iteration:value,...'"})
    lambda_mt: str = field(default="1", metadata={"help": "weight of MT steps: constant or 'iteration:value,...'"})
    noise_unit: ChoiceEnum(["token", "word"]) = field(default="token", metadata={
        "help": "what AE noise shuffles, drops and blanks: BPE tokens (the authors') or whole words (▁ or @@ "
                "vocabularies)"})
    word_shuffle: float = field(default=3.0, metadata={
        "help": "AE noise: sort units by index + U(0, k), so a unit moves fewer than k places; 0 = off"})
    word_dropout: float = field(default=0.1, metadata={"help": "AE noise: probability of deleting a unit"})
    word_blank: float = field(default=0.1, metadata={
        "help": "AE noise: probability of replacing a unit by <mask> (the MLM mask token)"})
    max_len: int = field(default=100, metadata={
        "help": "training sentences (AE, BT) and pairs (MT, either side) longer than this many tokens without "
                "</s> are removed, as the authors' --max_len; 0 = no limit"})
    bt_beam: int = field(default=1, metadata={"help": "beam size of online back-translation; 1 = greedy"})
    bt_max_len_a: float = field(default=1.3, metadata={
        "help": "back-translation: generated length <= a * source width + b (tokens before the forced </s>)"})
    bt_max_len_b: int = field(default=5, metadata={"help": "the b of --bt-max-len-a"})
    source_lang: Optional[str] = field(default=None, metadata={
        "help": "generation/evaluation: source language (with --target-lang, splits are one direction)"})
    target_lang: Optional[str] = field(default=None, metadata={"help": "generation/evaluation: target language"})
    max_source_positions: int = field(default=512, metadata={"help": "longest source in tokens"})
    max_target_positions: int = field(default=512, metadata={"help": "longest target in tokens"})
    eval_bleu: bool = field(default=False, metadata={
        "help": "validation: translate valid parallel data and log bleu_SRC_TGT (sacreBLEU, detokenized) and "
                "tok_bleu_SRC_TGT (Moses-tokenized, multi-bleu.perl-style: the paper's tables)"})
    eval_bleu_beam: int = field(default=1, metadata={"help": "beam size of validation BLEU; 1 = greedy (authors)"})
    eval_max_len_a: float = field(default=1.5, metadata={
        "help": "validation BLEU: generated length <= a * source width + b (tokens before the forced </s>)"})
    eval_max_len_b: int = field(default=8, metadata={
        "help": "the b of --eval-max-len-a; 1.5 and 8 are the authors' cap int(1.5 * len + 10), which counts "
                "the two </s> around the output"})
    eval_bleu_print_samples: bool = field(default=False, metadata={"help": "log one hypothesis per batch"})


def parse_mt_steps(spec: str, langs: List[str], kind: str) -> List[List[str]]:
    """'en,es' (ae), 'en-es' (mt) or 'en-es-en' (bt) -> lists of languages, with one clear error each."""
    flag = f"--{kind}-steps"
    size = {"ae": 1, "mt": 2, "bt": 3}[kind]
    steps = []
    for part in [p.strip() for p in (spec or "").split(",") if p.strip()]:
        names = part.split("-")
        if len(names) != size or not all(names):
            example = {"ae": "en", "mt": "en-es", "bt": "en-es-en"}[kind]
            raise ConfigError(f"{flag}: invalid step {part!r} (expected the form {example!r})")
        unknown = [n for n in names if n not in langs]
        if unknown:
            raise ConfigError(f"{flag}: language(s) {unknown} of step {part!r} are not in --langs {','.join(langs)}")
        if size >= 2 and names[0] == names[1]:
            raise ConfigError(f"{flag}: step {part!r} translates a language into itself (source == target)")
        if size == 3 and names[2] != names[0]:
            raise ConfigError(f"{flag}: step {part!r} must come back to its first language ('a-b-a')")
        if names in steps:
            raise ConfigError(f"{flag}: step {part!r} is given twice")
        steps.append(names)
    return steps


def _exists(prefix: Optional[str]) -> bool:
    return prefix is not None and os.path.exists(prefix + ".bin") and os.path.exists(prefix + ".idx")


@register_task("unsupervised_mt", dataclass=UnsupervisedMtConfig)
class UnsupervisedMtTask(MtEvaluationMixin, MtInferenceMixin, ScheduledStepsTask):
    """AE + online BT + MT steps, one per update; per-kind losses and BLEU per direction in validation."""

    def __init__(self, cfg: UnsupervisedMtConfig, dictionary, langs: List[str], langs_inferred: bool):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.data_dir = utils.split_paths(cfg.data)[0]
        self.train_dir = self.data_dir  # a sharded data path: this epoch's shard (see load_dataset)
        self.langs = langs
        self.langs_inferred = langs_inferred
        self.mask_idx = dictionary.index(layout.MASK)
        self.steps = {kind: parse_mt_steps(getattr(cfg, f"{kind}_steps"), langs, kind) for kind in ("ae", "bt", "mt")}
        self.lambdas = {kind: parse_schedule(getattr(cfg, f"lambda_{kind}"), f"--lambda-{kind}")
                        for kind in ("ae", "bt", "mt")}
        for flag, value in (("--bt-beam", cfg.bt_beam), ("--eval-bleu-beam", cfg.eval_bleu_beam)):
            if value < 1:
                raise ConfigError(f"{flag} {value}: must be >= 1")
        for flag, value in (("--eval-max-len-a", cfg.eval_max_len_a), ("--eval-max-len-b", cfg.eval_max_len_b)):
            if value < 0:
                raise ConfigError(f"{flag} {value}: must be >= 0")
        self.direction = None
        if cfg.source_lang or cfg.target_lang:
            if not (cfg.source_lang and cfg.target_lang):
                raise ConfigError("give both --source-lang and --target-lang (or neither)")
            self.direction = (cfg.source_lang, cfg.target_lang)
            self._check_direction(*self.direction)
        self._spm = None
        self._scorers = {}

    # ----------------------------------------------------------------------------------- set-up
    @classmethod
    def setup_task(cls, cfg: UnsupervisedMtConfig, **kwargs):
        if not cfg.data:
            raise ConfigError("unsupervised_mt needs the data-bin directory as the first argument")
        data_dir = utils.split_paths(cfg.data)[0]
        dictionary = layout.load_dictionary(data_dir)
        inferred = not cfg.langs
        if inferred:
            mono, pairs = layout.available(data_dir, "train")
            if not mono and not pairs:
                for split in ("valid", "test"):
                    mono, pairs = layout.available(data_dir, split)
                    if mono or pairs:
                        break
            langs = sorted(set(mono) | {lang for pair in pairs for lang in pair.split("-")})
            if not langs:
                raise ConfigError(f"{data_dir}: no binarized data found; give --langs")
        else:
            langs = layout.parse_langs(cfg.langs)
        task = cls(cfg, dictionary, langs, inferred)
        task._check_train_data()
        return task

    def _check_direction(self, src: str, tgt: str) -> None:
        for flag, lang in (("--source-lang", src), ("--target-lang", tgt)):
            if lang not in self.langs:
                raise ConfigError(f"{flag} {lang} is not one of the languages {','.join(self.langs)} (--langs)")
        if src == tgt:
            raise ConfigError(f"--source-lang and --target-lang are both {src}: source and target must differ")

    def _split_dir(self, split: str) -> str:
        return self.train_dir if split == "train" else self.data_dir

    def _mono_prefix(self, split: str, lang: str) -> str:
        return layout.mono_prefix(self._split_dir(split), split, lang)

    def _para_prefixes(self, split: str, src: str, tgt: str):
        return (layout.para_prefix(self._split_dir(split), split, src, tgt, src),
                layout.para_prefix(self._split_dir(split), split, src, tgt, tgt))

    def _check_train_data(self) -> None:
        """One clear error per step whose training data is missing (before any model is built)."""
        mono, pairs = layout.available(self.data_dir, "train")
        have = f"(found monolingual: {','.join(mono) or 'none'}; parallel: {','.join(pairs) or 'none'})"
        for kind in ("ae", "bt"):
            for names in self.steps[kind]:
                if not _exists(self._mono_prefix("train", names[0])):
                    raise ConfigError(
                        f"--{kind}-steps {'-'.join(names)}: no monolingual {names[0]} data "
                        f"{self._mono_prefix('train', names[0])}.bin in {self.data_dir} {have}")
        for src, tgt in self.steps["mt"]:
            if not all(_exists(p) for p in self._para_prefixes("train", src, tgt)):
                raise ConfigError(
                    f"--mt-steps {src}-{tgt}: no parallel data train.{src}-{tgt}.{{{src},{tgt}}}.bin "
                    f"(or train.{tgt}-{src}.*) in {self.data_dir} {have}")

    def lang_id(self, lang: str) -> int:
        return self.langs.index(lang)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    # The languages travel with checkpoints: fairseq-generate without --langs uses the trained order.
    def state_dict(self):
        state = dict(super().state_dict())
        state["langs"] = list(self.langs)
        return state

    def load_state_dict(self, state_dict):
        saved = state_dict.get("langs")
        if saved and list(saved) != self.langs:
            if not self.langs_inferred:
                raise ConfigError(f"the checkpoint was trained with --langs {','.join(saved)} but this run has "
                                 f"--langs {','.join(self.langs)}: language ids would not match")
            logger.info("languages from the checkpoint: %s", ",".join(saved))
            self.langs = list(saved)
            if self.direction:
                self._check_direction(*self.direction)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "langs"})

    def build_model(self, cfg, from_checkpoint=False):
        path = getattr(cfg, "pretrained_xlm_checkpoint", None)
        if path and not from_checkpoint:
            self._check_pretrained(path)
        model = super().build_model(cfg, from_checkpoint)
        if not hasattr(model, "decoder"):
            # e.g. fairseq-generate on a pretraining checkpoint: fairseq would fail later in reorder_encoder_out
            raise ConfigError(f"a {getattr(cfg, '_name', type(model).__name__)} model has no decoder: this is a "
                             f"pretraining checkpoint; MT needs an xlm_mt one (recipes/umt.sh, "
                             f"recipes/supervised_mt.sh, or --arch xlm_mt_*)")
        return model

    def _check_pretrained(self, path: str) -> None:
        """Refuse a pretrained XLM of another vocabulary or language order, naming the file."""
        if not os.path.isfile(path):
            raise MissingFileError(f"--pretrained-xlm-checkpoint {path}: no such file")
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # legacy (non-zip) files cannot be memory-mapped
            from ..safe_load import load_checkpoint
            state = load_checkpoint(path)
        rows = state.get("model", {}).get("encoder.embeddings.embed_tokens.weight")
        if rows is not None and rows.size(0) != len(self.dictionary):
            raise ConfigError(
                f"--pretrained-xlm-checkpoint {path}: vocabulary of {rows.size(0)} symbols, but "
                f"{self.data_dir}/dict.txt (+<mask>) has {len(self.dictionary)}: the data must be binarized "
                f"with the pretraining dictionary")
        task_cfg = (state.get("cfg") or {}).get("task") or {}
        their_dict = os.path.join(str(task_cfg.get("data") or ""), "dict.txt")
        if task_cfg.get("data") and os.path.isfile(their_dict):
            theirs = layout.load_dictionary(os.path.dirname(their_dict)).symbols
            if theirs != self.dictionary.symbols:
                first = next((i for i, (a, b) in enumerate(zip(theirs, self.dictionary.symbols)) if a != b),
                             min(len(theirs), len(self.dictionary)))
                raise ConfigError(
                    f"--pretrained-xlm-checkpoint {path}: pretrained with another vocabulary ({their_dict} and "
                    f"{self.data_dir}/dict.txt differ from symbol #{first}): binarize with the pretraining dict")
        their_langs = task_cfg.get("langs")
        if their_langs:
            theirs = layout.parse_langs(their_langs) if isinstance(their_langs, str) else list(their_langs)
            if theirs != self.langs:
                raise ConfigError(
                    f"--pretrained-xlm-checkpoint {path}: pretrained with --langs {','.join(theirs)}, but this run "
                    f"uses {','.join(self.langs)}: pass --langs {','.join(theirs)} (language ids must match)")

    # ------------------------------------------------------------------------------------ data
    def _load(self, prefix: str):
        if prefix is None or not os.path.exists(prefix + ".bin"):
            raise ConfigError(f"{prefix}.bin: missing")
        return layout.load_split(prefix, self.dictionary, self.data_dir)

    def _pair(self, src, tgt, src_lang: str, tgt_lang: str, shuffle: bool = True) -> LangPairDataset:
        """Right-padded pairs (XLM's positions count from the left) whose sources are ``</s> s </s>``;
        evaluation sets (shuffle=False) keep every sentence in their batches."""
        src = SourceDataset(src, self.dictionary.eos())
        pair = LanguagePairDataset(
            src, src.sizes, self.dictionary, tgt=tgt, tgt_sizes=None if tgt is None else tgt.sizes,
            tgt_dict=self.dictionary, left_pad_source=False, left_pad_target=False, shuffle=shuffle)
        return LangPairDataset(pair, self.lang_id(src_lang), self.lang_id(tgt_lang), exact_batches=not shuffle)

    def _ae_dataset(self, split: str, lang: str, shuffle: bool = True):
        mono = self._load(self._mono_prefix(split, lang))
        noised = WordNoiseDataset(mono, self.dictionary, self.cfg.word_shuffle, self.cfg.word_dropout,
                                  self.cfg.word_blank, blank_idx=self.mask_idx, seed=self.cfg.seed,
                                  vary_with_epoch=False, unit=self.cfg.noise_unit)
        return self._pair(noised, mono, lang, lang, shuffle)

    def _mt_dataset(self, split: str, src: str, tgt: str, shuffle: bool = True):
        src_prefix, tgt_prefix = self._para_prefixes(split, src, tgt)
        src_data, tgt_data = self._load(src_prefix), self._load(tgt_prefix)
        layout.check_parallel(src_data, tgt_data, src_prefix, tgt_prefix)
        return self._pair(src_data, tgt_data, src, tgt, shuffle)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        """train: one batch per step per update; with --source-lang/--target-lang: that direction;
        otherwise (valid): every MT direction of the steps and every AE language, batched apart."""
        if self.direction is not None and split != "train":
            dataset = self._direction_dataset(split, *self.direction)
        elif split == "train":
            self.train_dir = layout.split_dir(self.cfg.data, split, epoch)  # shard (epoch - 1) % n
            dataset = self._train_dataset()
        else:
            dataset = self._valid_dataset(split)
        self.datasets[split] = dataset
        return dataset

    def _train_dataset(self):
        """One StepDataset: AE and BT steps on monolingual sentences, MT steps on pairs, with the authors'
        batching lengths and length filter."""
        steps, costs, keep, sentences = OrderedDict(), {}, {}, {}
        for (lang,) in self.steps["ae"]:
            steps[f"ae:{lang}"] = self._ae_dataset("train", lang)
        for a, b, _ in self.steps["bt"]:
            # Source and target are the same real sentence; train_step replaces the source by its translation.
            mono = self._load(self._mono_prefix("train", a))
            steps[f"bt:{a}-{b}-{a}"] = self._pair(mono, mono, a, a)
        for src, tgt in self.steps["mt"]:
            steps[f"mt:{src}-{tgt}"] = self._mt_dataset("train", src, tgt)
        if not steps:
            raise ConfigError("give at least one of --ae-steps, --bt-steps, --mt-steps")
        for name, pair in steps.items():
            inner = pair.dataset
            lengths = [np.asarray(inner.tgt.sizes) - 1]  # tokens without </s>; the target is the clean text
            if name.startswith("mt:"):
                lengths.insert(0, np.asarray(inner.src.sizes) - 2)  # the source has </s> at both ends
            costs[name] = sum(n + 2 for n in lengths)  # the authors' batching length: len + 2 per sentence
            ok = np.logical_and.reduce([n >= 1 for n in lengths])
            if self.cfg.max_len > 0:
                ok &= np.logical_and.reduce([n <= self.cfg.max_len for n in lengths])
            keep[name] = np.flatnonzero(ok)
            sentences[name] = len(ok)
            if not ok.all():
                logger.warning("train %s: %d of %d sentences removed (empty or longer than --max-len %d)",
                               name, int((~ok).sum()), len(ok), self.cfg.max_len)
        return StepDataset(OrderedDict((k, DrawnPairs(v)) for k, v in steps.items()),
                           {k: v.collater for k, v in steps.items()}, costs, keep, sentences)

    def step_groups(self, dataset: StepDataset):
        """The authors' loop: every AE step (random order), min(5, n) sampled MT steps, every BT step."""
        def ids(kind):
            return [k for k, name in enumerate(dataset.names) if name.startswith(kind + ":")]

        mt = ids("mt")
        probs = smoothed_probs([dataset.sentences[dataset.names[k]] for k in mt],
                               self.cfg.lang_sampling_alpha) if mt else None
        return [StepGroup(ids("ae"), False), StepGroup(mt, True, probs), StepGroup(ids("bt"), False)]

    def step_weight(self, name: str, iteration: int) -> float:
        return float(self.lambdas[name.split(":")[0]](iteration))

    def eval_directions(self):
        """MT directions to validate: each --mt-steps pair and both directions of each --bt-steps pair."""
        out = [(s, t) for s, t in self.steps["mt"]]
        for a, b, _ in self.steps["bt"]:
            out += [(b, a), (a, b)]
        return list(dict.fromkeys(out))

    def _valid_dataset(self, split: str):
        parts = OrderedDict()
        for src, tgt in self.eval_directions():
            if all(_exists(p) for p in self._para_prefixes(split, src, tgt)):
                parts[f"mt:{src}-{tgt}"] = self._mt_dataset(split, src, tgt, shuffle=False)
            else:
                logger.warning("no %s.%s-%s parallel data: %s->%s is not validated", split, src, tgt, src, tgt)
        for (lang,) in self.steps["ae"]:
            if _exists(self._mono_prefix(split, lang)):
                parts[f"ae:{lang}"] = self._ae_dataset(split, lang, shuffle=False)
        if not parts:
            raise ConfigError(
                f"no {split} data in {self.data_dir} for the steps: expected {split}.SRC-TGT.{{SRC,TGT}}.bin for "
                f"the directions {self.eval_directions()} or {split}.LANG.bin for --ae-steps "
                f"(or pass --disable-validation)")
        return KeyedDatasets(parts)

    def _direction_dataset(self, split: str, src: str, tgt: str):
        src_prefix, tgt_prefix = self._para_prefixes(split, src, tgt)
        if _exists(src_prefix) and _exists(tgt_prefix):
            return self._mt_dataset(split, src, tgt, shuffle=False)
        if _exists(self._mono_prefix(split, src)):  # no reference: translate monolingual text
            return self._pair(self._load(self._mono_prefix(split, src)), None, src, tgt, shuffle=False)
        raise ConfigError(f"no {split} data for {src}->{tgt} in {self.data_dir}: expected "
                         f"{split}.{src}-{tgt}.{{{src},{tgt}}}.bin or {split}.{src}.bin")

    # ----------------------------------------------------------------------------------- steps
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """One step: gradient of lambda x (summed token loss); fairseq divides by the tokens -> mean."""
        model.train()
        model.set_num_updates(update_num)
        kind, name = sample["step"].split(":")
        weight = self.step_weight(sample["step"], sample["iteration"])
        if kind == "bt":
            with torch.autograd.profiler.record_function("backtranslation"):
                mid = name.split("-")[1]
                sample = backtranslate_sample(model, sample, self.lang_id(mid), self.cfg.bt_beam,
                                              self.cfg.bt_max_len_a, self.cfg.bt_max_len_b)
        with torch.autograd.profiler.record_function("forward"), autocast_bf16(self.cfg.autocast_bf16, model):
            loss, sample_size, out = criterion(model, sample)
        scaled = loss * weight
        if ignore_grad:
            scaled = scaled * 0
        with torch.autograd.profiler.record_function("backward"):
            optimizer.backward(scaled)
        return loss.detach(), sample_size, memory_usage.collect(model, self._tagged(out, f"{kind}_{name}"))

    @staticmethod
    def _tagged(out: dict, tag: str) -> dict:
        """The criterion's logging output plus its loss and sizes under ``{tag}:`` (per-step meters)."""
        log = dict(out)
        for key in ("loss", "nll_loss", "ntokens", "sample_size"):
            if key in out:
                log[f"{tag}:{key}"] = float(out[key])
        return log

    def valid_step(self, sample, model, criterion):
        model.eval()
        with torch.no_grad(), autocast_bf16(self.cfg.autocast_bf16, model):
            loss, sample_size, out = criterion(model, sample)
        key = sample.get("step") or "mt:{}-{}".format(*(self.direction or ("src", "tgt")))
        kind, name = key.split(":")
        out = self._tagged(out, f"{kind}_{name}")
        if kind == "mt" and self.cfg.eval_bleu and sample.get("target") is not None:
            src, tgt = name.split("-")
            out.update(self._bleu_stats(model, sample, src, tgt))
        return loss, sample_size, memory_usage.collect(model, out)

    # --------------------------------------------------------------------------------- metrics
    def reduce_metrics(self, logging_outputs, criterion):
        """The criterion's totals, plus ``{kind}_loss_{step}`` per step, ``bleu_{src}_{tgt}`` (sacreBLEU) and
        ``tok_bleu_{src}_{tgt}`` (tokenized, multi-bleu.perl-style)."""
        super().reduce_metrics(logging_outputs, criterion)

        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        keys = sorted({k for log in logging_outputs for k in log})
        for tag in sorted({k.rsplit(":", 1)[0] for k in keys if ":" in k}):
            size = total(f"{tag}:sample_size")
            if size > 0:
                kind, name = tag.split("_", 1)
                metrics.log_scalar(f"{kind}_loss_{name}", total(f"{tag}:loss") / size / math.log(2), size, round=3)
        log_bleu_metrics(logging_outputs)
