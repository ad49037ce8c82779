"""Use a trained model from Python the way fairseq's hub models are used (``RobertaModel.from_pretrained``,
``TransformerModel.from_pretrained``): ``XlmModel.from_pretrained(...)`` gives an ``XlmHubInterface``
(encode/decode, features, sentence embeddings, fill-mask), ``XlmMtModel.from_pretrained(...)`` fairseq's
``GeneratorHubInterface`` with a direction (``translate(["..."], "en", "es")``).

Both load with fairseq's ``hub_utils.from_pretrained`` (so ``checkpoint_utils`` and the task rebuild the
model) and tokenize with fairseq's ``sentencepiece`` BPE on the data-bin's ``spm.model``, the model that
``fairseq_xlm.cli.prepare`` binarized the training data with, so raw text gets the training ids.
"""

import contextlib
import os
from typing import Dict, List, Optional, Sequence

import torch
from fairseq import hub_utils
from fairseq.data import data_utils, encoders
from torch import Tensor, nn

from ..data import layout

# Tried in this order when no checkpoint_file is given: what fairseq-train keeps, then what convert writes.
CHECKPOINT_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt", "checkpoint.pt", "model.pt")


def _data_dir(model_dir: str, data_name_or_path: str) -> str:
    # fairseq's convention: a path starting with "." is relative to the model directory
    if data_name_or_path.startswith("."):
        return os.path.abspath(os.path.join(model_dir, data_name_or_path))
    return os.path.abspath(data_name_or_path)


def load_hub(model_dir: str, checkpoint_file: Optional[str] = None, data_name_or_path: str = ".",
             **kwargs) -> dict:
    """``hub_utils.from_pretrained`` with the data-bin's sentencepiece model; clear errors for missing files.

    ``data_name_or_path`` is the data-bin the model was trained on (``dict.txt`` + ``spm.model``); by
    fairseq's convention "." (the default) is ``model_dir`` itself. Other keyword arguments override the
    checkpoint's settings, as in fairseq."""
    model_dir = os.path.abspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: no such model directory")
    if checkpoint_file is None:
        found = [name for name in CHECKPOINT_NAMES if os.path.isfile(os.path.join(model_dir, name))]
        if not found:
            raise FileNotFoundError(f"{model_dir}: none of {', '.join(CHECKPOINT_NAMES)}; pass checkpoint_file=")
        checkpoint_file = found[0]
    for name in checkpoint_file.split(os.pathsep):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise FileNotFoundError(f"{os.path.join(model_dir, name)}: no such checkpoint (checkpoint_file=)")
    data_dir = _data_dir(model_dir, data_name_or_path)
    wanted = ["dict.txt"] + ([] if "bpe" in kwargs else ["spm.model"])
    missing = [name for name in wanted if not os.path.isfile(os.path.join(data_dir, name))]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: no {' or '.join(missing)}; pass data_name_or_path= the data-bin the model was "
            f"trained on (made by fairseq_xlm.cli.prepare: dict.txt + spm.model)")
    if "bpe" not in kwargs:
        kwargs.update(bpe="sentencepiece", sentencepiece_model=os.path.join(data_dir, "spm.model"))
    return hub_utils.from_pretrained(model_dir, checkpoint_file, data_dir, **kwargs)


def _lang_id(task, lang: str) -> int:
    langs = list(task.langs)
    if lang not in langs:
        raise ValueError(f"language {lang!r} is not one of the model's languages {','.join(langs)}")
    return langs.index(lang)


class XlmHubInterface(nn.Module):
    """An XLM encoder with its tokenization: ``encode``/``decode``, ``extract_features``,
    ``embed_sentences`` and ``fill_mask``. Built in eval mode (no dropout); ``.to(device)`` moves it."""

    def __init__(self, cfg, task, model):
        super().__init__()
        self.cfg = cfg
        self.task = task
        self.model = model
        self.dictionary = task.source_dictionary
        self.bpe = encoders.build_bpe(cfg.bpe)
        self.mask_idx = self.dictionary.index(layout.MASK)
        # this is useful for determining the device (as in fairseq's hub interfaces)
        self.register_buffer("_float_tensor", torch.tensor([0], dtype=torch.float))
        self.eval()

    @property
    def device(self):
        return self._float_tensor.device

    @property
    def langs(self) -> List[str]:
        """The model's languages in language-id order."""
        return list(self.task.langs)

    def lang_id(self, lang: str) -> int:
        return _lang_id(self.task, lang)

    def encode(self, sentence: str, lang: Optional[str] = None) -> torch.LongTensor:
        """Raw text -> ``</s> pieces </s>`` ids, the authors' single-sentence input (XNLI, MT sources).
        ``lang`` is checked against the model's languages (the shared BPE does not depend on it)."""
        if lang is not None:
            self.lang_id(lang)
        line = f"{self.dictionary.eos_word} {self.bpe.encode(sentence)}"
        return self.dictionary.encode_line(line, append_eos=True, add_if_not_exist=False).long()

    def decode(self, tokens: Tensor) -> str:
        """Ids -> raw text; ``</s>`` and padding are dropped."""
        if tokens.dim() != 1:
            raise ValueError(f"decode takes one sentence's ids (1-D), got shape {tuple(tokens.shape)}")
        keep = tokens[(tokens != self.dictionary.eos()) & (tokens != self.dictionary.pad())]
        return self.bpe.decode(self.dictionary.string(keep))

    def _langs_like(self, tokens: Tensor, lang: str) -> Tensor:
        return torch.full_like(tokens, self.lang_id(lang))

    def extract_features(self, tokens: Tensor, lang: str, return_all_hiddens: bool = False):
        """Last layer's states (B, T, C) of ids (T,) or right-padded (B, T); with ``return_all_hiddens``
        the list [embeddings, layer 1, ..., layer N]."""
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.size(-1) > self.model.max_positions():
            raise ValueError(f"{tokens.size(-1)} tokens exceed the model's {self.model.max_positions()} positions")
        tokens = tokens.to(self.device)
        features, extra = self.model(tokens, langs=self._langs_like(tokens, lang), features_only=True,
                                     return_all_hiddens=return_all_hiddens)
        return extra["inner_states"] if return_all_hiddens else features

    def _batch(self, sentences: Sequence[str], lang: str) -> Tensor:
        return data_utils.collate_tokens([self.encode(s, lang) for s in sentences], self.dictionary.pad(),
                                         left_pad=False)

    @torch.no_grad()
    def embed_sentences(self, sentences: Sequence[str], lang: str, layer: int = -1,
                        batch_size: int = 32) -> Dict[str, Tensor]:
        """Sentence vectors of ``layer`` (index into [embeddings, layer 1, ..., N]; -1 = last):
        ``{"first": (N, C) state of the first </s> (what XNLI classifies), "mean": (N, C) mean over the
        sentence's tokens, padding excluded}``, as float32 on the CPU."""
        if isinstance(sentences, str) or len(sentences) == 0:
            raise ValueError("embed_sentences takes a non-empty list of sentences")
        self.lang_id(lang)
        n_states = len(self.model.encoder.layers) + 1
        if not -n_states <= layer < n_states:
            raise ValueError(f"layer {layer}: the model has {n_states} states (embeddings + "
                             f"{n_states - 1} layers), so -{n_states} <= layer < {n_states}")
        first, mean = [], []
        for start in range(0, len(sentences), batch_size):
            tokens = self._batch(sentences[start:start + batch_size], lang).to(self.device)
            states = self.extract_features(tokens, lang, return_all_hiddens=True)[layer].float()
            keep = tokens.ne(self.dictionary.pad()).unsqueeze(-1).to(states.dtype)
            first.append(states[:, 0].cpu())
            mean.append(((states * keep).sum(1) / keep.sum(1)).cpu())
        return {"first": torch.cat(first), "mean": torch.cat(mean)}

    def _special_ids(self, device) -> Tensor:
        """Ids of the symbols that are not text: fairseq's specials, ``<mask>``, padding ``madeupword``s."""
        d = self.dictionary
        ids = [i for i, sym in enumerate(d.symbols)
               if i < d.nspecial or i == self.mask_idx or sym.startswith("madeupword")]
        return torch.tensor(ids, dtype=torch.long, device=device)

    @torch.no_grad()
    def fill_mask(self, masked_input: str, lang: str, topk: int = 5):
        """The ``topk`` fillers of the one ``<mask>`` in the text: [(filled text, probability, filler)], text
        pieces only (special symbols are never proposed; probabilities are the model's, over the whole vocabulary)."""
        mask = layout.MASK
        if masked_input.count(mask) != 1:
            raise ValueError(f"fill_mask needs exactly one {mask} in the text, found "
                             f"{masked_input.count(mask)}: {masked_input!r}")
        spans = [self.bpe.encode(span.strip()) if span.strip() else "" for span in masked_input.split(mask)]
        line = " ".join(p for p in (self.dictionary.eos_word, spans[0], mask, spans[1]) if p)
        tokens = self.dictionary.encode_line(line, append_eos=True, add_if_not_exist=False).long()
        position = int((tokens == self.mask_idx).nonzero()[0, 0])
        tokens = tokens.unsqueeze(0).to(self.device)
        logits, _ = self.model(tokens, langs=self._langs_like(tokens, lang))
        probs = logits[0, position].float().softmax(-1)
        # as RoBERTa's hub and HF's pipeline: no special symbol (</s>, <pad>, <unk>, <mask>, ...) as a filler
        probs[self._special_ids(probs.device)] = 0
        values, index = probs.topk(min(topk, probs.numel() - len(self._special_ids(probs.device))))
        out = []
        for value, idx in zip(values.tolist(), index.tolist()):
            piece = self.dictionary[idx]
            filler = self.bpe.decode(piece)
            # a piece that starts a word brings its space (sentencepiece's ▁), as RoBERTa's fill_mask
            if piece.startswith("\u2581") and f" {mask}" in masked_input:
                filled = masked_input.replace(f" {mask}", " " + filler)
            else:
                filled = masked_input.replace(mask, filler)
            out.append((filled, value, filler))
        return out


class XlmGeneratorHubInterface(hub_utils.GeneratorHubInterface):
    """fairseq's generator hub interface with a direction: ``translate(sentences, src, tgt, beam=5)``.
    The direction reaches the task (encoder language ids, the decoder's ``tgt_langs``) for that call."""

    @property
    def langs(self) -> List[str]:
        return list(self.task.langs)

    def translate(self, sentences: List[str], src: str, tgt: str, beam: int = 5, verbose: bool = False,
                  **kwargs) -> List[str]:
        """Raw sentences of ``src`` -> raw ``tgt`` text (one string for one string). An empty or blank
        sentence translates to "" (the model is not asked: it would invent a sentence for no input)."""
        if not isinstance(sentences, str) and len(sentences) == 0:
            raise ValueError("translate takes a sentence or a non-empty list of sentences")
        batch = [sentences] if isinstance(sentences, str) else list(sentences)
        todo = [i for i, sentence in enumerate(batch) if sentence.strip()]
        out = [""] * len(batch)
        with self.task.translating(src, tgt):
            if todo:
                for i, text in zip(todo, self.sample([batch[i] for i in todo], beam, verbose, **kwargs)):
                    out[i] = text
        return out[0] if isinstance(sentences, str) else out

    def generate(self, tokenized_sentences, beam: int = 5, verbose: bool = False, src: Optional[str] = None,
                 tgt: Optional[str] = None, **kwargs):
        """fairseq's ``generate``; ``src``/``tgt`` set the direction (else the one of ``translate``)."""
        scope = self.task.translating(src, tgt) if src or tgt else contextlib.nullcontext()
        with scope:
            return super().generate(tokenized_sentences, beam, verbose, **kwargs)

