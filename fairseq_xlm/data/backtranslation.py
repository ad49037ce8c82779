"""Online back-translation: translate a batch with the current model, then train on (synthetic -> real).

``translate`` runs without gradients and with the model in eval mode (its previous mode is restored), so
dropout is off while generating and the training forward that follows is unaffected. Greedy decoding is
our own loop (``fairseq_xlm.data.greedy_decoding``: preallocated key/value caches, encoder keys/values
projected once, finished sentences leave the batch); ``beam > 1`` uses fairseq's ``SequenceGenerator``.
Both follow the generator's conventions, so greedy output equals ``SequenceGenerator(beam_size=1)``: decoding starts with ``</s>``,
the target language is given by ``tgt_langs`` (the decoder's language embedding), ``</s>`` is forbidden at
the first step and forced after ``max_len = min(int(a * src_width + b), max_positions - 1)`` tokens, and
``<pad>`` is never produced.
"""

import math
from typing import List

import torch
from fairseq.data import data_utils
from fairseq.sequence_generator import SequenceGenerator
from torch import Tensor

from .greedy_decoding import greedy_static_cache


def max_output_len(src_tokens: Tensor, max_len_a: float, max_len_b: int, max_positions: int) -> int:
    """The generator's length limit for a batch: ``min(int(a * width + b), max_positions - 1)``."""
    return min(int(max_len_a * src_tokens.size(1) + max_len_b), max_positions - 1)


@torch.no_grad()
def greedy_decode(model, net_input: dict, max_len_a: float = 1.3, max_len_b: int = 5,
                  cache: str = "static") -> List[Tensor]:
    """Greedy hypotheses (each ending with ``</s>``) for ``net_input`` (which carries ``tgt_langs``).

    ``cache``: "static" (the default: ``greedy_static_cache``'s preallocated buffers), "incremental"
    (the decoder's own fairseq incremental state, what ``SequenceGenerator`` uses) or "none" (the decoder
    re-run on the whole prefix at every step); the baselines of ``bench/bt_generation.py``, same tokens.
    """
    if cache not in ("static", "incremental", "none"):
        raise ValueError(f"greedy_decode: cache={cache!r}, expected 'static', 'incremental' or 'none'")
    src = net_input["src_tokens"]
    max_len = max_output_len(src, max_len_a, max_len_b, model.max_decoder_positions())
    if cache == "static":
        return greedy_static_cache(model, net_input, max_len)
    decoder = model.decoder
    dictionary = decoder.dictionary
    eos, pad = dictionary.eos(), dictionary.pad()
    bsz = src.size(0)
    enc = model.encoder(**{k: v for k, v in net_input.items() if k != "prev_output_tokens"})
    state = {} if cache == "incremental" else None
    out = src.new_full((bsz, max_len + 2), pad)
    out[:, 0] = eos
    active = torch.arange(bsz, device=src.device)
    for step in range(max_len + 1):
        logits, _ = decoder(out[active, : step + 1], encoder_out=enc, incremental_state=state)
        lprobs = logits[:, -1, :].float()
        lprobs[:, pad] = -math.inf
        if step == 0:
            lprobs[:, eos] = -math.inf  # the generator's min_len=1
        if step >= max_len:
            nxt = torch.full_like(active, eos)
        else:
            nxt = lprobs.argmax(dim=-1)
        out[active, step + 1] = nxt
        done = nxt.eq(eos)
        if done.all():
            break
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            active = active[keep]
            enc = model.encoder.reorder_encoder_out(enc, keep)
            if state is not None:
                decoder.reorder_incremental_state_scripting(state, keep)
    hyps = []
    for row in out[:, 1:]:
        end = int(row.eq(eos).nonzero()[0])
        hyps.append(row[: end + 1].clone())
    return hyps


@torch.no_grad()
def beam_decode(model, net_input: dict, beam: int, max_len_a: float = 1.3, max_len_b: int = 5) -> List[Tensor]:
    """Best beam-search hypothesis per sentence, through fairseq's SequenceGenerator."""
    generator = SequenceGenerator([model], model.decoder.dictionary, beam_size=beam,
                                  max_len_a=max_len_a, max_len_b=max_len_b)
    return [hyps[0]["tokens"] for hyps in generator.generate([model], {"net_input": net_input})]


def translate(model, net_input: dict, tgt_lang_id: int, beam: int = 1, max_len_a: float = 1.3,
              max_len_b: int = 5) -> List[Tensor]:
    """Translate ``net_input`` into language ``tgt_lang_id`` in eval mode, without gradients."""
    net_input = dict(net_input)
    net_input.pop("prev_output_tokens", None)
    src = net_input["src_tokens"]
    net_input["tgt_langs"] = torch.full((src.size(0),), tgt_lang_id, dtype=torch.long, device=src.device)
    was_training = model.training
    model.eval()
    try:
        if beam > 1:
            return beam_decode(model, net_input, beam, max_len_a, max_len_b)
        return greedy_decode(model, net_input, max_len_a, max_len_b)
    finally:
        model.train(was_training)


def backtranslate_sample(model, sample: dict, mid_lang_id: int, beam: int = 1, max_len_a: float = 1.3,
                         max_len_b: int = 5) -> dict:
    """A training sample (synthetic ``mid_lang`` source -> the real sentence) from a monolingual one.

    ``sample`` is a collated pair whose source and target are the same real sentences (language
    ``tgt_langs``); the returned copy keeps target, ``prev_output_tokens`` and ``tgt_langs`` and replaces
    the source with the model's translation into ``mid_lang_id`` as ``</s> hyp </s>`` (right-padded, with
    ``src_langs``).
    """
    net_input = sample["net_input"]
    hyps = translate(model, net_input, mid_lang_id, beam, max_len_a, max_len_b)
    dictionary = model.decoder.dictionary
    # the authors' encoder input: </s> hypothesis </s>
    hyps = [torch.cat([h.new_full((1,), dictionary.eos()), h]) for h in hyps]
    src_tokens = data_utils.collate_tokens(hyps, dictionary.pad(), left_pad=False)
    new_input = dict(net_input)
    new_input["src_tokens"] = src_tokens.to(net_input["src_tokens"].device)
    new_input["src_lengths"] = torch.tensor([len(h) for h in hyps], device=src_tokens.device)
    new_input["src_langs"] = torch.full_like(net_input["tgt_langs"], mid_lang_id)
    out = dict(sample)
    out["net_input"] = new_input
    return out
