"""Cross-lingual sentence retrieval: a check beyond the paper, in the style of XTREME's Tatoeba/BUCC tasks.

Both sides of a parallel split are embedded with one encoder (the states of a chosen layer, mean-pooled over
each sentence's tokens, ``</s> s </s>`` as every fairseq_xlm task feeds them, padding excluded); every source
sentence's nearest target by cosine similarity is its retrieval, and P@1 is the share retrieved correctly,
in each direction. No training: it shows how close the encoder puts translations of each other.

    python -m fairseq_xlm.cli.evaluate_retrieval --checkpoint CKPT --data DATA_BIN --src en --tgt es
"""

import os
from typing import Dict, Iterable, List, Sequence

import numpy as np
import torch
from torch import Tensor

from .data import layout


@torch.no_grad()
def embed(model, dictionary, batches: Iterable[Sequence[Tensor]], lang_id: int, layer: int = -1) -> Tensor:
    """(N, C) float tensor: for every sentence of ``batches`` (lists of 1-D token tensors as stored in a data-bin,
    ending with ``</s>``), the mean over its tokens of layer ``layer``'s states (0 = embeddings, -1 = last).

    ``model``: an ``XlmModel``, ``XlmMtModel`` or their encoder; run in eval mode, language ``lang_id``."""
    encoder = getattr(model, "encoder", model)
    n_layers = len(encoder.layers)
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ValueError(f"--layer {layer}: the encoder has layers 0 (embeddings) to {n_layers} (or -1 = last)")
    was_training = encoder.training
    encoder.eval()
    eos, pad = dictionary.eos(), dictionary.pad()
    out: List[Tensor] = []
    try:
        for batch in batches:
            width = 1 + max(len(s) for s in batch)
            tokens = torch.full((len(batch), width), pad, dtype=torch.long)
            for i, sentence in enumerate(batch):
                tokens[i, 0] = eos
                tokens[i, 1:1 + len(sentence)] = sentence
            _, extra = encoder.extract_features(tokens, langs=torch.full_like(tokens, lang_id),
                                                return_all_hiddens=True)
            states = extra["inner_states"][layer].float()
            keep = tokens.ne(pad).unsqueeze(-1).to(states.dtype)
            out.append((states * keep).sum(1) / keep.sum(1))
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError("no sentences to embed (an empty list of batches)")
    return torch.cat(out)


def _length_batches(dataset, indices: Sequence[int], max_tokens: int) -> List[List[int]]:
    """Indices grouped by length into batches of at most ``max_tokens`` padded tokens (less padding, same result)."""
    sizes = dataset.sizes  # lengths without reading the sentences
    order = sorted(indices, key=lambda i: int(sizes[i]))
    batches, batch, width = [], [], 0
    for i in order:
        length = int(sizes[i]) + 1  # + the </s> in front
        if batch and max(width, length) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, width = [], 0
        batch.append(i)
        width = max(width, length)
    if batch:
        batches.append(batch)
    return batches


def embed_dataset(model, dictionary, dataset, lang_id: int, layer: int = -1, n: int = 0,
                  max_tokens: int = 4000) -> Tensor:
    """``embed`` over the first ``n`` sentences (0 = all) of a fairseq indexed dataset, in dataset order."""
    n = n or len(dataset)
    batches = _length_batches(dataset, range(n), max_tokens)
    states = embed(model, dictionary, ([dataset[i] for i in b] for b in batches), lang_id, layer)
    out = torch.empty_like(states)
    out[torch.tensor([i for b in batches for i in b])] = states
    return out


def precision_at_1(src: np.ndarray, tgt: np.ndarray) -> Dict[str, float]:
    """P@1 of cosine nearest-neighbour retrieval between row-aligned embeddings, in both directions."""
    if len(src) != len(tgt) or len(src) == 0:
        raise ValueError(f"retrieval needs two non-empty aligned sides, got {len(src)} and {len(tgt)} sentences")
    src = src / np.maximum(np.linalg.norm(src, axis=1, keepdims=True), 1e-12)
    tgt = tgt / np.maximum(np.linalg.norm(tgt, axis=1, keepdims=True), 1e-12)
    sims = src @ tgt.T
    gold = np.arange(len(src))
    return {"src_tgt": float(np.mean(sims.argmax(1) == gold)), "tgt_src": float(np.mean(sims.argmax(0) == gold))}


def evaluate_retrieval(checkpoint: str, data: str, src: str, tgt: str, split: str = "test", layer: int = -1,
                       max_sentences: int = 0) -> dict:
    """P@1 of retrieving ``{split}.{src}-{tgt}``'s translations with ``checkpoint``'s encoder (an ``xlm_transformer``
    or ``xlm_mt`` checkpoint trained on the data-bin ``data``), both directions; ``max_sentences``: the first N
    pairs only (0 = all). Returns {"src", "tgt", "n", "p_at_1_src_tgt", "p_at_1_tgt_src"}."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    langs = list(getattr(task, "langs", None) or [])
    for flag, lang in (("--src", src), ("--tgt", tgt)):
        if lang not in langs:
            raise ValueError(f"{flag} {lang}: {checkpoint} knows the languages {','.join(langs) or '(none)'}")
    prefixes = [layout.para_prefix(data, split, src, tgt, lang) for lang in (src, tgt)]
    if None in prefixes:
        raise FileNotFoundError(f"{data}: no parallel split {split}.{src}-{tgt}.{{{src},{tgt}}}.bin (or "
                                f"{split}.{tgt}-{src}.*) to retrieve from")
    dictionary = task.source_dictionary
    sides = [layout.load_split(p, dictionary, data, f"{split} {lang} text") for p, lang in zip(prefixes, (src, tgt))]
    layout.check_parallel(*sides, *prefixes)
    if max_sentences < 0:
        raise ValueError(f"--max-sentences {max_sentences}: give 0 (all) or a positive number")
    n = min(max_sentences or len(sides[0]), len(sides[0]))
    if n == 0:
        raise ValueError(f"{prefixes[0]}.bin: no sentence pairs")
    vectors = [embed_dataset(models[0], dictionary, side, langs.index(lang), layer, n).numpy()
               for side, lang in zip(sides, (src, tgt))]
    p = precision_at_1(*vectors)
    return {"src": src, "tgt": tgt, "n": n, "p_at_1_src_tgt": p["src_tgt"], "p_at_1_tgt_src": p["tgt_src"]}
