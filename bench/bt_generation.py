"""Online back-translation cost: greedy decoding speed next to the authors' decoder, fp32 and bf16 autocast,
and (--update-share) the share of an unsupervised-MT update spent generating.

Decoders compared on the same batch (every greedy one gives the same tokens in fp32: checked):
  * ours, static cache    fairseq_xlm.data.backtranslation.greedy_decode (fairseq_xlm.data.greedy_decoding:
                          preallocated K/V buffers, finished sentences leave the batch) - what --bt-beam 1 uses
  * ours, incremental     the same loop through the decoder's fairseq incremental state
  * fairseq greedy        fairseq's SequenceGenerator with beam 1 (incremental)
  * authors' generate    the authors' TransformerModel encoder + TransformerModel.generate (greedy, with their
                          key/value cache, as their back-translation decodes), their code from --xlm-src
                          (default ../shared/anchors/xlm-authors), given the same weights; left out, with a
                          note, where their code is absent
  * --all-decoders adds ours without incremental state and SequenceGenerator beam 5 (what --bt-beam 5 uses).
HF transformers has no XLM decoder (XLMWithLMHeadModel is an encoder), so it has no row.

The model is an untrained xlm_mt (random weights). Two length modes (--modes):
  * cap     </s> suppressed (output bias -1e4): every hypothesis runs to the length limit, so every decoder
            does the same work (the matmuls every decoder must do, and its own overhead);
  * varied  realistic ends: sources of varied lengths (uniform in [src_len / 2, src_len], one at src_len) and
            a bias on </s> calibrated (from the logits along the </s>-suppressed hypotheses) so that the
            greedy hypotheses' mean length equals the sources' mean length; they end at varied lengths, as
            a trained model's do, which is where finished sentences leaving the batch shows.
The limit is the authors' back-translation rule, ``int(1.3 * len + 5)`` symbols counting both </s> (their
max_len), which is ``--bt-max-len-a 1.3 --bt-max-len-b 3`` in our terms (tokens before the forced </s>).
--bf16 adds a column under torch.autocast(bfloat16) for every decoder (ours and theirs alike); bf16 tokens may
differ from fp32 ones at near-ties (their agreement is printed). Times are CPU seconds per batch
(time.process_time, which a shared machine disturbs far less than wall time) with --threads 1, wall time
otherwise; decoders alternate within each repeat and the median is reported.

    .venv/bin/python bench/bt_generation.py --bf16 [--modes cap varied --dim 512 --layers 6 --batch 32]
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

    Special ids are passed to their model as ours (eos 2, pad 1), so no row is swapped. Their generate may
    end a hypothesis at the first step; fairseq's generator (and ours) may not (min_len=1), so their first
    step's </s> score is set to -inf here (once per batch; it matters only when </s> would win there)."""
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

    get_scores = decoder.pred_layer.get_scores
    first = []

    def get_scores_min_len_1(x):  # fairseq's (and our) min_len=1, which their generate lacks: no </s> first
        scores = get_scores(x)
        if not first:
            first.append(True)
            scores[:, d.eos()] = -torch.inf
        return scores

    @torch.no_grad()
    def decode(src_tokens, src_langs, tgt_lang):
        x, lengths = src_tokens.t().contiguous(), src_tokens.ne(d.pad()).sum(1)
        langs = src_langs[None, :].expand_as(x)
        torch.Tensor.masked_fill_ = bool_masked_fill_  # about 1 us per call: noise next to a decoding step
        decoder.pred_layer.get_scores = get_scores_min_len_1
        first.clear()
        try:
            enc = encoder("fwd", x=x, lengths=lengths, langs=langs, causal=False).transpose(0, 1)
            out, out_len = decoder.generate(enc, lengths, tgt_lang, max_len=int(1.3 * lengths.max().item() + 5))
        finally:
            torch.Tensor.masked_fill_ = masked_fill_
            del decoder.pred_layer.get_scores
        return [out[1:n - 1, i] for i, n in enumerate(out_len.tolist())]  # without their leading/forced </s>

    return decode


def make_model(args):
    d = Dictionary()
    for i in range(args.vocab - len(d)):
        d.add_symbol(f"\u2581w{i}")
    torch.manual_seed(0)
    model = build_model("xlm_mt_tiny", d, ["en", "es"], encoder_embed_dim=args.dim, encoder_layers=args.layers,
                        encoder_attention_heads=args.heads, encoder_ffn_embed_dim=4 * args.dim)
    set_eos_bias(model, d, SUPPRESS)
    return d, model


SUPPRESS = -1e4  # an output bias on </s> that no logit overcomes: every hypothesis runs to the limit


def set_eos_bias(model, d, value):
    with torch.no_grad():
        model.decoder.stack.output_bias[d.eos()] = value


def make_batch(d, args, lang, seed, varied=False):
    """--batch sentences of --src-len tokens (with </s>); ``varied``: lengths uniform in [src_len / 2,
    src_len], right-padded, the first at src_len (so the batch width, hence every length limit, is src_len)."""
    g = torch.Generator().manual_seed(seed)
    b, t = args.batch, args.src_len
    tokens = torch.randint(d.nspecial, len(d), (b, t), generator=g)
    lengths = torch.full((b,), t)
    if varied:
        lengths = torch.randint(max(2, t // 2), t + 1, (b,), generator=g)
        lengths[0] = t
    tokens[torch.arange(t)[None, :] >= lengths[:, None]] = d.pad()
    tokens[torch.arange(b), lengths - 1] = d.eos()
    prev = torch.cat([torch.full((b, 1), d.eos()), tokens[:, :-1]], dim=1).masked_fill(tokens.eq(d.pad()), d.pad())
    langs = torch.full((b,), lang, dtype=torch.long)
    net_input = {"src_tokens": tokens, "src_lengths": lengths, "src_langs": langs,
                 "tgt_langs": langs, "prev_output_tokens": prev}
    return {"id": torch.arange(b), "nsentences": b, "ntokens": int(lengths.sum()), "net_input": net_input,
            "target": tokens}


@torch.no_grad()
def calibrate_eos_bias(model, d, net_input, target_mean: float) -> float:
    """The </s> output bias whose greedy hypotheses have mean length ``target_mean`` (tokens before </s>).

    With </s> suppressed, greedy decoding follows one path per sentence; with bias ``b`` it follows the same
    path until the first step t >= 1 at which </s> wins, i.e. b >= need[t] = (best other logit) - (</s>
    logit without bias) along that path. So the lengths for any ``b`` come from one decode and one teacher-
    forced forward, and ``b`` is found by bisection (to float rounding: the real decode decides)."""
    eos, pad = d.eos(), d.pad()
    set_eos_bias(model, d, SUPPRESS)
    hyps = greedy_decode(model, net_input, 1.3, 3)  # all run to the limit
    limit = len(hyps[0]) - 1
    prev = torch.stack([torch.cat([h.new_full((1,), eos), h[:-1]]) for h in hyps])
    logits = model(**net_input, prev_output_tokens=prev)[0].float()
    eos_logit = logits[..., eos] - SUPPRESS
    logits[..., eos] = logits[..., pad] = -torch.inf
    need = logits.max(dim=-1)[0] - eos_logit  # (B, limit + 1); step 0 may not end
    need[:, 0] = torch.inf
    need = need[:, :limit]

    def mean_len(b):
        ends = (need <= b).float()
        first = torch.where(ends.any(1), ends.argmax(1), torch.full_like(ends[:, 0], limit, dtype=torch.long))
        return first.float().mean().item()

    lo, hi = need[:, 1:].min().item() - 1, need[:, 1:].max().item() + 1
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if mean_len(mid) < target_mean else (mid, hi)
    return (lo + hi) / 2


def bf16_native() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def clock(args):
    return time.process_time if args.threads == 1 else time.perf_counter


def decoders_for(model, d, args, net_input):
    a, b = 1.3, 3  # = the authors' int(1.3 * len + 5) with both </s> counted
    decoders = {
        "ours, static cache (greedy_decode)": lambda: greedy_decode(model, net_input, a, b),
        "ours, fairseq incremental state": lambda: greedy_decode(model, net_input, a, b, cache="incremental"),
        "fairseq SequenceGenerator, beam 1": lambda: beam_decode(model, net_input, 1, a, b),
    }
    if args.all_decoders:
        decoders["ours, no incremental state"] = lambda: greedy_decode(model, net_input, a, b, cache="none")
        decoders["fairseq SequenceGenerator, beam 5"] = lambda: beam_decode(model, net_input, 5, a, b)
    if os.path.isdir(os.path.join(args.xlm_src, "xlm")):
        theirs = authors_decoder(model, d, args)  # built after the </s> bias is set: it copies the weights
        decoders[AUTHORS] = lambda: theirs(net_input["src_tokens"], net_input["src_langs"], 1)
    return decoders


AUTHORS = "authors' TransformerModel.generate (greedy, cache)"
OURS = "ours, static cache (greedy_decode)"


def bench_mode(model, d, args, mode):
    """{precision: {decoder: median seconds per batch}} and the hypotheses' lengths, for one length mode."""
    sample = make_batch(d, args, 0, seed=1, varied=mode == "varied")
    net_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
    net_input["tgt_langs"] = torch.ones(args.batch, dtype=torch.long)
    model.eval()
    note = ""
    if mode == "varied":
        target = float((net_input["src_lengths"] - 1).float().mean())
        bias = calibrate_eos_bias(model, d, net_input, target)
        set_eos_bias(model, d, bias)
        note = f"</s> bias {bias:.3f} (calibrated for a mean length of {target:.1f}, the sources' mean); "
    else:
        set_eos_bias(model, d, SUPPRESS)
    decoders = decoders_for(model, d, args, net_input)
    precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]

    def run(fn, precision):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return fn()

    reference, agree = None, {}
    for precision in precisions:  # warm-up (first calls allocate) and the token checks
        for name, fn in decoders.items():
            tokens = [[t for t in h.tolist() if t != d.eos()] for h in run(fn, precision)]
            if precision == "fp32" and "beam 5" not in name:
                assert reference is None or tokens == reference, f"{name} decodes differently ({mode})"
                reference = reference or tokens
            elif precision == "bf16":
                agree[name] = sum(x == y for x, y in zip(tokens, reference))
    lengths = sorted(len(h) for h in reference)
    note += (f"hypothesis lengths min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]} "
             f"(limit {int(1.3 * args.src_len + 3)})")
    timer = clock(args)
    times = {p: {name: [] for name in decoders} for p in precisions}
    for _ in range(args.repeats):  # interleaved so that machine noise hits every decoder alike
        for precision in precisions:
            for name, fn in decoders.items():
                start = timer()
                run(fn, precision)
                times[precision][name].append(timer() - start)
    medians = {p: {name: statistics.median(t) for name, t in ts.items()} for p, ts in times.items()}
    return medians, note, agree


def print_mode(args, mode, medians, note, agree):
    print(f"\n## {mode}: {note}\n")
    precisions = list(medians)
    head = " | ".join(f"{p} s / batch | {p} sentences / s | {p} vs authors" for p in precisions)
    print(f"| decoder | {head} |")
    print("|---|" + "---:|" * (3 * len(precisions)))
    for name in medians["fp32"]:
        cells = []
        for p in precisions:
            sec, base = medians[p][name], medians[p].get(AUTHORS)
            ratio = f"{base / sec:.2f}x" if base else "-"
            cells.append(f"{sec:.3f} | {args.batch / sec:.1f} | {ratio}")
        print(f"| {name} | {' | '.join(cells)} |")
    print("| HF transformers | " + " | ".join("- | - | -" for _ in precisions) +
          " |  (no XLM decoder: XLMWithLMHeadModel is an encoder)")
    if agree:
        print("\nbf16 hypotheses equal to the fp32 ones: " +
              ", ".join(f"{name} {n}/{args.batch}" for name, n in agree.items()))


def bench_update(model, d, args):
    """Median time of the parts of one AE + BT update (batches of --batch sentences)."""
    set_eos_bias(model, d, SUPPRESS)
    criterion = LabelSmoothedCrossEntropyCriterion(SimpleNamespace(target_dictionary=d), False, 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    parts = {"generate (2 BT batches)": [], "forward+backward (2 AE + 2 BT)": [], "Adam step": []}
    timer = clock(args)
    for rep in range(args.repeats + 1):
        model.train()
        gen = train = 0.0
        for lang in (0, 1):
            mono = make_batch(d, args, lang, seed=10 + rep * 4 + lang)
            start = timer()
            bt = backtranslate_sample(model, mono, 1 - lang, 1, 1.3, 3)
            gen += timer() - start
            for smp in (make_batch(d, args, lang, seed=20 + rep * 4 + lang), bt):
                start = timer()
                criterion(model, smp)[0].backward()
                train += timer() - start
        start = timer()
        optimizer.step()
        optimizer.zero_grad()
        if rep:  # the first update warms up
            parts["generate (2 BT batches)"].append(gen)
            parts["forward+backward (2 AE + 2 BT)"].append(train)
            parts["Adam step"].append(timer() - start)
    return {name: statistics.median(t) for name, t in parts.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=16000, help="vocabulary size")
    parser.add_argument("--dim", type=int, default=512, help="model dimension")
    parser.add_argument("--layers", type=int, default=6, help="encoder and decoder layers")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--batch", type=int, default=32, help="sentences per batch")
    parser.add_argument("--src-len", type=int, default=30, help="source tokens per sentence (with </s>)")
    parser.add_argument("--modes", nargs="+", choices=["cap", "varied"], default=["cap", "varied"],
                        help="length modes (see the module docstring)")
    parser.add_argument("--bf16", action="store_true", help="a bf16 autocast column next to fp32")
    parser.add_argument("--all-decoders", action="store_true", help="also no incremental state and beam 5")
    parser.add_argument("--update-share", action="store_true", help="also time the parts of an AE + BT update")
    parser.add_argument("--xlm-src", default=XLM_SRC, help="the authors' code (a folder holding xlm/)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    d, model = make_model(args)

    print(f"# back-translation generation: xlm_mt d={args.dim}, {args.layers}+{args.layers} layers, "
          f"vocab {args.vocab}, batch {args.batch} x {args.src_len} source tokens -> at most "
          f"{int(1.3 * args.src_len + 3)} tokens + </s> (the authors' int(1.3 * len + 5)), CPU, "
          f"{args.threads} thread(s), {'CPU' if args.threads == 1 else 'wall'} time, median of {args.repeats}")
    if not os.path.isdir(os.path.join(args.xlm_src, "xlm")):
        print(f"Note: the authors' row is left out: no xlm/ under {args.xlm_src}")
    if args.bf16 and not bf16_native():
        print("WARNING: this CPU lacks avx512_bf16 and amx_bf16: bf16 matmuls are emulated, and the bf16 "
              "column measures that emulation")
    for mode in args.modes:
        print_mode(args, mode, *bench_mode(model, d, args, mode))

    if args.update_share:
        parts = bench_update(model, d, args)
        total = sum(parts.values())
        print("\n| one AE + BT update (ae en,es; bt en-es-en,es-en-es), fp32 | seconds | share |")
        print("|---|---:|---:|")
        for name, sec in parts.items():
            print(f"| {name} | {sec:.3f} | {100 * sec / total:.0f} % |")
        print(f"| total | {total:.3f} | 100 % |")


if __name__ == "__main__":
    main()
