"""Online back-translation cost: generation speed with and without incremental state, and the share of an
unsupervised-MT update spent generating.

Decoders compared on the same batch (all produce the same greedy tokens):
  * ours, incremental     fairseq_xlm.data.backtranslation.greedy_decode (cached keys/values, finished
                          sentences leave the batch) - what --bt-beam 1 uses
  * ours, no incremental  the same loop re-running the decoder on the whole prefix at every step
  * fairseq greedy        fairseq's SequenceGenerator with beam 1 (incremental)
  * fairseq beam 5        what --bt-beam 5 uses
  * authors' generate    the authors' TransformerModel encoder + TransformerModel.generate (greedy, with their
                          key/value cache, as their back-translation decodes), their code from --xlm-src
                          (default ../shared/anchors/xlm-authors), given the same weights; left out, with a
                          note, where their code is absent
HF transformers has no XLM decoder (XLMWithLMHeadModel is an encoder), so it has no row.
The model is an untrained xlm_mt (random weights, </s> suppressed until the length limit), so every
hypothesis runs to the length limit: the work is identical across decoders and repeats. The limit is the
authors' back-translation rule, ``int(1.3 * len + 5)`` symbols counting both </s> (their max_len), which is
``--bt-max-len-a 1.3 --bt-max-len-b 3`` in our terms (tokens before the forced </s>); every decoder gives
the same tokens (checked; the authors' too, from the same weights).

The update share: one update of the paper's unsupervised setting (--ae-steps en,es --bt-steps
en-es-en,es-en-es) on batches of --batch sentences = 2 back-translations (greedy, incremental) + 4
forward/backward passes + one Adam step; the table gives the time of each part.

    .venv/bin/python bench/bt_generation.py [--dim 512 --layers 6 --batch 32 --src-len 30 --threads 1]

Measured with the defaults on the project's 2-core CPU machine (shared, 1 thread): incremental 24.0
sentences/s, no incremental state 4.0 (6.0x the time), SequenceGenerator beam 1 20.8, beam 5 6.6; in one
update generation took 22 % (2.8 s), forward+backward 76 %, Adam 2 %.
"""

import argparse
import os
import re
import statistics
import sys
import time
from argparse import Namespace
from types import SimpleNamespace

import torch
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary

import fairseq_xlm  # noqa: F401
from fairseq_xlm.data.backtranslation import backtranslate_sample, beam_decode, greedy_decode
from fairseq_xlm.models.factory import build_model


XLM_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "anchors", "xlm-authors")
# our xlm_mt names (under encoder. / decoder.stack.) -> the authors' TransformerModel names
AUTHORS_NAMES = [
    (r"embeddings\.embed_tokens\.weight", "embeddings.weight"),
    (r"embeddings\.embed_positions\.weight", "position_embeddings.weight"),
    (r"embeddings\.embed_langs\.weight", "lang_embeddings.weight"),
    (r"embeddings\.layernorm_embedding\.(\w+)", r"layer_norm_emb.\1"),
    (r"layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(\w+)", r"attentions.\1.\2_lin.\3"),
    (r"layers\.(\d+)\.self_attn_layer_norm\.(\w+)", r"layer_norm1.\1.\2"),
    (r"layers\.(\d+)\.encoder_attn\.(q|k|v|out)_proj\.(\w+)", r"encoder_attn.\1.\2_lin.\3"),
    (r"layers\.(\d+)\.encoder_attn_layer_norm\.(\w+)", r"layer_norm15.\1.\2"),
    (r"layers\.(\d+)\.fc(1|2)\.(\w+)", r"ffns.\1.lin\2.\3"),
    (r"layers\.(\d+)\.final_layer_norm\.(\w+)", r"layer_norm2.\1.\2"),
    (r"output_bias", "pred_layer.proj.bias"),
]


def authors_state(state, prefix):
    """The authors' state dict of one stack of our xlm_mt (their output layer is tied to the embeddings)."""
    out = {}
    for key, val in state.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            pattern, repl = next((p, r) for p, r in AUTHORS_NAMES if re.fullmatch(p, name))
            out[re.sub(pattern, repl, name)] = val
    return out


def authors_decoder(model, d, args):
    """The authors' encoder and greedy generate with our model's weights: (sources, (B,) lengths) -> hyps.

    Special ids are passed to their model as ours (eos 2, pad 1), so no row is swapped."""
    sys.path.insert(0, os.path.abspath(args.xlm_src))
    from xlm.model.transformer import TransformerModel

    p = Namespace(n_words=len(d), eos_index=d.eos(), pad_index=d.pad(), emb_dim=args.dim, n_layers=args.layers,
                  n_heads=args.heads, dropout=0.0, attention_dropout=0.0, gelu_activation=True,
                  share_inout_emb=True, sinusoidal_embeddings=False, use_lang_emb=True, n_langs=2, asm=False,
                  id2lang={0: "en", 1: "es"}, lang2id={"en": 0, "es": 1})
    encoder = TransformerModel(p, [None] * len(d), is_encoder=True, with_output=False).eval()
    decoder = TransformerModel(p, [None] * len(d), is_encoder=False, with_output=True).eval()
    state = model.state_dict()
    encoder.load_state_dict(authors_state(state, "encoder."), strict=True)
    dec_state = authors_state(state, "decoder.stack.")
    dec_state["pred_layer.proj.weight"] = dec_state["embeddings.weight"]
    decoder.load_state_dict(dec_state, strict=True)

    masked_fill_ = torch.Tensor.masked_fill_

    def bool_masked_fill_(self, mask, value):  # their generate ends with a uint8 mask (torch < 1.2 took it)
        return masked_fill_(self, mask.bool() if mask.dtype == torch.uint8 else mask, value)

    @torch.no_grad()
    def decode(src_tokens, src_langs, tgt_lang):
        x, lengths = src_tokens.t().contiguous(), src_tokens.ne(d.pad()).sum(1)
        langs = src_langs[None, :].expand_as(x)
        torch.Tensor.masked_fill_ = bool_masked_fill_  # about 1 us per call: noise next to a decoding step
        try:
            enc = encoder("fwd", x=x, lengths=lengths, langs=langs, causal=False).transpose(0, 1)
            out, out_len = decoder.generate(enc, lengths, tgt_lang, max_len=int(1.3 * lengths.max().item() + 5))
        finally:
            torch.Tensor.masked_fill_ = masked_fill_
        return [out[1:n - 1, i] for i, n in enumerate(out_len.tolist())]  # without their leading/forced </s>

    return decode


def make_model(args):
    d = Dictionary()
    for i in range(args.vocab - len(d)):
        d.add_symbol(f"\u2581w{i}")
    torch.manual_seed(0)
    model = build_model("xlm_mt_tiny", d, ["en", "es"], encoder_embed_dim=args.dim, encoder_layers=args.layers,
                        encoder_attention_heads=args.heads, encoder_ffn_embed_dim=4 * args.dim)
    with torch.no_grad():
        model.decoder.stack.output_bias[d.eos()] = -1e4  # every hypothesis runs to the length limit
    return d, model


def make_batch(d, args, lang, seed):
    g = torch.Generator().manual_seed(seed)
    b, t = args.batch, args.src_len
    tokens = torch.randint(d.nspecial, len(d), (b, t), generator=g)
    tokens[:, -1] = d.eos()
    prev = torch.cat([tokens[:, -1:], tokens[:, :-1]], dim=1)
    langs = torch.full((b,), lang, dtype=torch.long)
    net_input = {"src_tokens": tokens, "src_lengths": torch.full((b,), t), "src_langs": langs,
                 "tgt_langs": langs, "prev_output_tokens": prev}
    return {"id": torch.arange(b), "nsentences": b, "ntokens": b * t, "net_input": net_input, "target": tokens}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_decoders(model, d, args):
    sample = make_batch(d, args, 0, seed=1)
    net_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
    net_input["tgt_langs"] = torch.ones(args.batch, dtype=torch.long)
    a, b = 1.3, 3  # = the authors' int(1.3 * len + 5) with both </s> counted
    decoders = {
        "ours, incremental": lambda: greedy_decode(model, net_input, a, b),
        "ours, no incremental state": lambda: greedy_decode(model, net_input, a, b, cache="none"),
        "fairseq SequenceGenerator, beam 1": lambda: beam_decode(model, net_input, 1, a, b),
        "fairseq SequenceGenerator, beam 5": lambda: beam_decode(model, net_input, 5, a, b),
    }
    if os.path.isdir(os.path.join(args.xlm_src, "xlm")):
        theirs = authors_decoder(model, d, args)
        decoders["authors' TransformerModel.generate (greedy, cache)"] = lambda: theirs(
            net_input["src_tokens"], net_input["src_langs"], 1)
    else:
        print(f"Note: the authors' row is left out: no xlm/ under {args.xlm_src}\n")
    model.eval()
    reference = None
    for name, fn in decoders.items():  # warm-up (first calls allocate) and a check that greedy agrees
        hyps = fn()
        if name != "fairseq SequenceGenerator, beam 5":
            tokens = [[t for t in h.tolist() if t != d.eos()] for h in hyps]
            assert reference is None or tokens == reference, f"{name} decodes differently"
            reference = tokens
    times = {name: [] for name in decoders}
    for _ in range(args.repeats):  # interleaved so that machine noise hits every decoder alike
        for name, fn in decoders.items():
            times[name].append(timed(fn)[0])
    return {name: statistics.median(t) for name, t in times.items()}


def bench_update(model, d, args):
    """Median time of the parts of one AE + BT update (batches of --batch sentences)."""
    criterion = LabelSmoothedCrossEntropyCriterion(SimpleNamespace(target_dictionary=d), False, 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    parts = {"generate (2 BT batches)": [], "forward+backward (2 AE + 2 BT)": [], "Adam step": []}
    for rep in range(args.repeats + 1):
        model.train()
        gen = train = 0.0
        for lang in (0, 1):
            mono = make_batch(d, args, lang, seed=10 + rep * 4 + lang)
            dt, bt = timed(lambda: backtranslate_sample(model, mono, 1 - lang, 1, 1.3, 3))
            gen += dt
            for smp in (make_batch(d, args, lang, seed=20 + rep * 4 + lang), bt):
                dt, _ = timed(lambda: criterion(model, smp)[0].backward())
                train += dt
        dt, _ = timed(lambda: (optimizer.step(), optimizer.zero_grad()))
        if rep:  # the first update warms up
            parts["generate (2 BT batches)"].append(gen)
            parts["forward+backward (2 AE + 2 BT)"].append(train)
            parts["Adam step"].append(dt)
    return {name: statistics.median(t) for name, t in parts.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=16000, help="vocabulary size")
    parser.add_argument("--dim", type=int, default=512, help="model dimension")
    parser.add_argument("--layers", type=int, default=6, help="encoder and decoder layers")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--batch", type=int, default=32, help="sentences per batch")
    parser.add_argument("--src-len", type=int, default=30, help="source tokens per sentence (with </s>)")
    parser.add_argument("--xlm-src", default=XLM_SRC, help="the authors' code (a folder holding xlm/)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    d, model = make_model(args)

    print(f"# back-translation generation: xlm_mt d={args.dim}, {args.layers}+{args.layers} layers, "
          f"vocab {args.vocab}, batch {args.batch} x {args.src_len} source tokens -> "
          f"{int(1.3 * args.src_len + 3)} tokens + </s> (the authors' int(1.3 * len + 5)), "
          f"CPU fp32, {args.threads} thread(s), median of {args.repeats}\n")
    decoders = bench_decoders(model, d, args)
    base = decoders["ours, incremental"]
    print("| decoder | seconds / batch | sentences / s | relative to ours, incremental |")
    print("|---|---:|---:|---:|")
    for name, sec in decoders.items():
        print(f"| {name} | {sec:.3f} | {args.batch / sec:.1f} | {sec / base:.2f}x time |")
    print("| HF transformers | - | - | no XLM decoder (XLMWithLMHeadModel is an encoder) |")

    parts = bench_update(model, d, args)
    total = sum(parts.values())
    print("\n| one AE + BT update (ae en,es; bt en-es-en,es-en-es) | seconds | share |")
    print("|---|---:|---:|")
    for name, sec in parts.items():
        print(f"| {name} | {sec:.3f} | {100 * sec / total:.0f} % |")
    print(f"| total | {total:.3f} | 100 % |")


if __name__ == "__main__":
    main()
