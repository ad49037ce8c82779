"""Task ``xnli``: cross-lingual classification on a pretrained XLM encoder (Lample & Conneau, 2019, sec. 5.1).

Zero-shot transfer trains on ``--train-langs`` (default ``en``) and validates/tests on every language present;
``--translate-train`` trains on the (machine-translated) training sets of every language instead. Sentence
pairs (XNLI) and single texts (Bible genres) share one layout under the pretraining data-bin:

    DATA/                               the pretraining data-bin: dict.txt (+ <mask>), spm.model
    DATA/{cls_subdir}/                  default "xnli"; written by ``python -m fairseq_xlm.cli.prepare_xnli``
        labels.txt                      class names, one a line; the line order gives the class ids
        {split}.{lang}.input0.{bin,idx} first text (premise; the verse for single-text tasks)
        {split}.{lang}.input1.{bin,idx} second text (hypothesis); absent for single-text tasks
        {split}.{lang}.label            gold labels as text, one a line

The classifier reads the first position's final hidden state (the ``</s>`` that opens every sample)
through dropout and ``Linear(dim, n_classes)``, as the authors do. It lives in the model as
``classification_heads["xnli"]``, added by ``build_model`` (fairseq's RoBERTa keeps its heads the same way),
so fine-tuned checkpoints load with ``checkpoint_utils.load_model_ensemble`` and this task.

Training follows the authors' schedule in their units: an epoch is ``--epoch-size`` sentences (their 20000)
of a fresh random permutation, in random batches (their ``group_by_size=False``; ``--group-by-size`` sorts
them), so fairseq's ``--max-epoch`` (their 250 ``n_epochs``), validation and saving at epoch ends are theirs.

Validation on several languages: one combined ``valid`` set whose samples carry their language, and the
criterion ``xlm_classification`` logs ``accuracy_{lang}`` plus their mean ``accuracy`` (use
``--best-checkpoint-metric accuracy --maximize-best-checkpoint-metric``). fairseq's
``--valid-subset valid_en,valid_es`` could not do this: it picks the best checkpoint on the first subset only.

Separate learning rates for encoder and classifier (the authors' ``--optimizer_e`` / ``--optimizer_p``):
``build_model`` tags every parameter with ``param_group`` ``"encoder"`` or ``"classifier"``, which is what
fairseq's ``composite`` optimizer groups by; it is configured through ``fairseq-hydra-train`` (its groups are
a dict that argparse cannot express); see ``recipes/xnli_two_lr.yaml``. With any other optimizer the tags
are ignored and both parts share ``--lr``.
"""

import glob
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from fairseq import checkpoint_utils
from fairseq.data import ConcatDataset, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II
from torch import nn

from ..data import layout
from ..data.classification_dataset import XlmClassificationDataset, epoch_batches, load_label_set, read_labels
from ..errors import ConfigError, MissingFileError
from ..models.xlm_transformer import XlmModel, check_vocab_and_langs
from ..optim.foreach_adam import use_foreach_adam
from ..precision import AUTOCAST_HELP, autocast_bf16
from .scheduled import linked_value

logger = logging.getLogger(__name__)

HEAD = "xnli"


@dataclass
class XlmXnliConfig(FairseqDataclass):
    """Data, languages, classes and initialisation of cross-lingual classification."""

    data: str = field(default="", metadata={"help": "the pretraining data-bin (dict.txt, spm.model); the "
                                                    "classification data is in its --cls-subdir"})
    cls_subdir: str = field(default="xnli", metadata={"help": "folder under DATA with labels.txt and "
                                                              "{split}.{lang}.input0/input1/label"})
    langs: str = field(default="", metadata={"help": "the pretraining languages in the pretraining order "
                                                     "(their index is the language id of the checkpoint)"})
    train_langs: str = field(default="en", metadata={"help": "languages to train on (zero-shot transfer "
                                                             "to the others)"})
    translate_train: bool = field(default=False, metadata={
        "help": "train on the training sets of every language of --langs found in the data (translate-train); "
                "overrides --train-langs"})
    eval_langs: str = field(default="", metadata={"help": "languages to validate/test on; empty = every "
                                                          "language with data for the split"})
    num_classes: int = field(default=0, metadata={"help": "number of classes; 0 = the lines of labels.txt "
                                                          "(a different value is an error)"})
    max_sentence_tokens: int = field(default=256, metadata={"help": "cut each '</s> sentence </s>' to this "
                                                                    "many tokens (the authors' --max_len)"})
    pretrained_xlm_checkpoint: Optional[str] = field(default=None, metadata={
        "help": "xlm_pretrain (or converted authors') checkpoint to initialise the encoder from; it must share "
                "the data-bin's dictionary and --langs"})
    classifier_dropout: float = field(default=0.0, metadata={
        "help": "dropout before the classifier's Linear (the authors' XNLI --dropout, default 0)"})
    epoch_size: int = field(default=-1, metadata={
        "help": "training sentences (examples) per epoch, the authors' --epoch_size: each epoch is a new random "
                "permutation of the training set, stopped after the batch that reaches this many; -1 or 0 = "
                "the whole training set"})
    group_by_size: bool = field(default=False, metadata={
        "help": "sort each epoch's permutation by length before cutting it into batches (the authors' "
                "--group_by_size): less padding, but batches of similar length (and often of one genre or "
                "label); default: random batches, as the authors' XNLI runs"})
    autocast_bf16: bool = field(default=False, metadata={"help": AUTOCAST_HELP})
    seed: int = II("common.seed")
    # Read to refuse validations that are never saved (checkpoint_best.pt would miss them).
    validate_interval_updates: int = II("dataset.validate_interval_updates")
    save_interval_updates: int = II("checkpoint.save_interval_updates")
    disable_validation: bool = II("dataset.disable_validation")
    no_save: bool = II("checkpoint.no_save")


class XlmClassificationHead(nn.Module):
    """Dropout and Linear(dim, n_classes) on the first position's final hidden state."""

    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(dim, num_classes)

    def forward(self, features):
        """features: (B, T, C) -> logits (B, n_classes)."""
        return self.out_proj(self.dropout(features[:, 0]))


def add_classification_head(model: XlmModel, num_classes: int, dropout: float) -> XlmModel:
    """Give ``model`` the head ``classification_heads["xnli"]`` and tag parameters for ``composite``."""
    # The LM output bias is never used here; dropping it keeps every parameter trained (DDP needs that).
    model.encoder.output_bias = None
    dim = model.encoder.embed_tokens.embedding_dim
    model.classification_heads = nn.ModuleDict({HEAD: XlmClassificationHead(dim, num_classes, dropout)})
    for name, param in model.named_parameters():
        param.param_group = "classifier" if name.startswith("classification_heads.") else "encoder"
    return model


def classification_logits(model, net_input: dict):
    """Logits (B, n_classes) of a model built by XlmXnliTask for a batch's ``net_input``."""
    features, _ = model(**net_input, features_only=True)
    return model.classification_heads[HEAD](features)


def load_pretrained_encoder(model: XlmModel, path: str, langs: List[str]) -> None:
    """Copy the encoder of an ``xlm_transformer`` checkpoint into ``model``; one clear error when the
    checkpoint has another vocabulary, other languages or another shape."""
    if not os.path.isfile(path):
        raise MissingFileError(f"--pretrained-xlm-checkpoint {path}: no such file")
    ckpt = checkpoint_utils.load_checkpoint_to_cpu(path)
    cfg = ckpt.get("cfg") or {}
    task_cfg = cfg.get("task") if hasattr(cfg, "get") else None
    ckpt_langs = task_cfg.get("langs") if task_cfg is not None and hasattr(task_cfg, "get") else None
    if ckpt_langs and layout.parse_langs(ckpt_langs) != langs:
        raise ConfigError(
            f"--pretrained-xlm-checkpoint {path} was pretrained with --langs {ckpt_langs}, but this run has "
            f"--langs {','.join(langs)}: give the pretraining languages in the pretraining order"
        )
    state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    if not state:
        raise ConfigError(f"--pretrained-xlm-checkpoint {path}: no encoder.* weights (not an xlm_transformer?)")
    check_vocab_and_langs(state, "", len(model.encoder.dictionary), model.encoder.n_langs,
                          where=f"--pretrained-xlm-checkpoint {path}")
    state.pop("output_bias", None)  # the LM head's bias: classification predicts no tokens
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip()][:2]
        raise ConfigError(
            f"--pretrained-xlm-checkpoint {path} does not fit --arch {getattr(model.cfg, '_name', '?')}: "
            f"{' '.join(detail)} (use the checkpoint's architecture)"
        ) from None
    logger.info("initialised the encoder from %s", path)


@register_task("xnli", dataclass=XlmXnliConfig)
class XlmXnliTask(FairseqTask):
    """Cross-lingual classification: zero-shot from --train-langs, or translate-train."""

    def __init__(self, cfg: XlmXnliConfig, dictionary, label_names: List[str]):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.label_names = label_names
        self.langs = layout.parse_langs(cfg.langs)
        self.cls_dir = os.path.join(cfg.data, cfg.cls_subdir)
        for flag, value in (("--train-langs", cfg.train_langs), ("--eval-langs", cfg.eval_langs)):
            if value:
                self._check_known(layout.parse_langs(value, flag), flag)
        if cfg.epoch_size < -1:
            raise ConfigError(f"--epoch-size {cfg.epoch_size}: give sentences per epoch, or -1 (or 0) for the "
                             f"whole training set")

    @classmethod
    def setup_task(cls, cfg: XlmXnliConfig, **kwargs):
        if not cfg.data:
            raise ConfigError("xnli needs the data-bin directory as the first argument of fairseq-train")
        dictionary = layout.load_dictionary(cfg.data)
        cls_dir = os.path.join(cfg.data, cfg.cls_subdir)
        if not os.path.isdir(cls_dir):
            raise MissingFileError(f"{cls_dir}: no classification data (--cls-subdir {cfg.cls_subdir}); "
                                    f"make it with python -m fairseq_xlm.cli.prepare_xnli")
        labels = load_label_set(os.path.join(cls_dir, "labels.txt"))
        if cfg.num_classes and cfg.num_classes != len(labels):
            raise ConfigError(f"--num-classes {cfg.num_classes} but {cls_dir}/labels.txt has {len(labels)} classes")
        logger.info("dictionary: %d types; %d classes: %s", len(dictionary), len(labels), ", ".join(labels))
        return cls(cfg, dictionary, labels)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return None

    def _check_known(self, langs: List[str], where: str) -> None:
        unknown = [lang for lang in langs if lang not in self.langs]
        if unknown:
            raise ConfigError(
                f"{where}: language(s) {unknown} are not in --langs {','.join(self.langs)}, so the model has no "
                f"language embedding for them"
            )

    def _check_every_validation_is_saved(self) -> None:
        """fairseq saves at epoch ends and every --save-interval-updates; a validation between two saves is
        logged and lost, so checkpoint_best.pt would be the best of the saved points only."""
        every = linked_value(self.cfg, "validate_interval_updates", 0)
        save = linked_value(self.cfg, "save_interval_updates", 0)
        off = linked_value(self.cfg, "disable_validation", False) or linked_value(self.cfg, "no_save", False)
        if every <= 0 or off:
            return
        if save <= 0 or every % save:
            raise ConfigError(
                f"--validate-interval-updates {every} validates between saves (--save-interval-updates {save}), "
                f"so checkpoint_best.pt would miss those validations: add --save-interval-updates {every}"
            )

    def data_langs(self, split: str) -> List[str]:
        """Languages with ``{split}.{lang}.input0`` data, in --langs order; unknown ones are an error."""
        found = sorted(
            os.path.basename(p).split(".")[1]
            for p in glob.glob(os.path.join(self.cls_dir, f"{split}.*.input0.bin"))
        )
        self._check_known(found, f"{self.cls_dir}/{split}.*.input0.bin")
        return [lang for lang in self.langs if lang in found]

    def split_langs(self, split: str) -> List[str]:
        """The languages a split is built from (training languages for train, evaluation ones otherwise)."""
        present = self.data_langs(split)
        if split == "train":
            if self.cfg.translate_train:
                wanted = present
            else:
                wanted = layout.parse_langs(self.cfg.train_langs, "--train-langs")
        elif self.cfg.eval_langs:
            wanted = layout.parse_langs(self.cfg.eval_langs, "--eval-langs")
        else:
            wanted = present
        missing = [lang for lang in wanted if lang not in present]
        if missing or not wanted:
            raise MissingFileError(
                f"{self.cls_dir}: no '{split}' data for {missing or 'any language'} "
                f"(found: {', '.join(present) or 'none'})"
            )
        return wanted

    def _load_language(self, split: str, lang: str) -> XlmClassificationDataset:
        prefix = os.path.join(self.cls_dir, f"{split}.{lang}")
        inputs = []
        for k in (0, 1):
            path = f"{prefix}.input{k}"
            exists = os.path.exists(path + ".bin")
            inputs.append(layout.load_split(path, self.dictionary, self.cfg.data) if exists else None)
        if inputs[0] is None:
            raise ConfigError(f"{prefix}.input0.bin: missing")
        if inputs[1] is not None:
            layout.check_parallel(inputs[0], inputs[1], prefix + ".input0", prefix + ".input1")
        labels = self.read_labels(prefix + ".label", len(inputs[0]))
        return XlmClassificationDataset(
            inputs[0], labels, self.langs.index(lang), self.dictionary.eos(), self.dictionary.pad(),
            input1=inputs[1], max_sentence_tokens=self.cfg.max_sentence_tokens,
        )

    def read_labels(self, path: str, expected: int) -> np.ndarray:
        """The class ids of a split's ``.label`` file (sibling tasks read other labels)."""
        return read_labels(path, {name: i for i, name in enumerate(self.label_names)}, expected)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """One dataset of every language of the split; each sample carries its language id."""
        if split == "train":
            self._check_every_validation_is_saved()
        per_lang = [self._load_language(split, lang) for lang in self.split_langs(split)]
        if len({ds.input1 is None for ds in per_lang}) > 1:
            raise ConfigError(f"{self.cls_dir}: some languages of '{split}' have input1 (pairs) and some do not")
        for ds in per_lang:
            logger.info("%s %s: %d examples", split, self.langs[ds.lang_id], len(ds))
        self.datasets[split] = per_lang[0] if len(per_lang) == 1 else ConcatDataset(per_lang)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           skip_remainder_batch=False, grouped_shuffling=False, update_epoch_batch_itr=False):
        """Training: the authors' random batches and epochs (``classification_dataset.epoch_batches``), drawn
        from (seed, epoch). Evaluation: fairseq's size-sorted batches, keeping every example."""
        if dataset is not self.datasets.get("train"):
            # required_batch_size_multiple 1: fairseq's batch_by_size drops what a batch-size multiple leaves.
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs, 1, seed, num_shards,
                shard_id, num_workers, epoch, data_buffer_size, disable_iterator_cache, skip_remainder_batch,
                grouped_shuffling, update_epoch_batch_itr)
        indices = np.arange(len(dataset), dtype=np.int64)
        if max_positions is not None:
            indices = self.filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)
        sizes = np.asarray(dataset.sizes)

        def make_batches(ds, ep):
            return epoch_batches(sizes, indices, seed, ep, max_sentences, max_tokens, self.cfg.group_by_size,
                                 self.cfg.epoch_size)

        # A callable batch sampler is asked again at every epoch; disable_shuffling keeps its order.
        return iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater, batch_sampler=make_batches, seed=seed,
            num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
            buffer_size=data_buffer_size, skip_remainder_batch=skip_remainder_batch, disable_shuffling=True)

    def build_model(self, cfg, from_checkpoint=False):
        """The XLM encoder (initialised from --pretrained-xlm-checkpoint) plus the classification head."""
        model = super().build_model(cfg, from_checkpoint)
        if not isinstance(model, XlmModel):
            raise ConfigError(f"task xnli needs an xlm_transformer architecture (e.g. --arch xlm_tiny), "
                             f"got {type(model).__name__}")
        add_classification_head(model, len(self.label_names), self.cfg.classifier_dropout)
        # A fine-tuned checkpoint already holds the encoder: only a fresh run reads the pretrained file.
        if self.cfg.pretrained_xlm_checkpoint and not from_checkpoint:
            load_pretrained_encoder(model, self.cfg.pretrained_xlm_checkpoint, self.langs)
        elif not from_checkpoint:
            logger.warning("no --pretrained-xlm-checkpoint: the encoder starts from random weights")
        return model

    def _autocast(self, criterion):
        """``criterion`` with its forward under --autocast-bf16 (fairseq's steps call only criterion(m, s))."""
        if not self.cfg.autocast_bf16:
            return criterion

        def forward(model, sample):
            with autocast_bf16(True, model):
                return criterion(model, sample)
        return forward

    def optimizer_step(self, optimizer, model, update_num):
        """fairseq's CPU Adam step with foreach ops (the same numbers, less per-update overhead)."""
        use_foreach_adam(optimizer)
        optimizer.step()

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        return super().train_step(sample, model, self._autocast(criterion), optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        return super().valid_step(sample, model, self._autocast(criterion))
