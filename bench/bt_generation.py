"""Online back-translation cost: generation speed with and without incremental state, and the share of an
unsupervised-MT update spent generating.

Decoders compared on the same batch (all produce the same greedy tokens):
  * ours, incremental     fairseq_xlm.data.backtranslation.greedy_decode (cached keys/values, finished
                          sentences leave the batch) - what --bt-beam 1 uses
  * ours, no incremental  the same loop re-running the decoder on the whole prefix at every step
  * fairseq greedy        fairseq's SequenceGenerator with beam 1 (incremental)
  * fairseq beam 5        what --bt-beam 5 uses
The model is an untrained xlm_mt (random weights, </s> suppressed until the length limit), so every
hypothesis has exactly --gen-len tokens: the work is identical across decoders and repeats.

The update share: one update of the paper's unsupervised setting (--ae-steps en,es --bt-steps
en-es-en,es-en-es) on batches of --batch sentences = 2 back-translations (greedy, incremental) + 4
forward/backward passes + one Adam step; the table gives the time of each part.

    .venv/bin/python bench/bt_generation.py [--dim 512 --layers 6 --batch 32 --src-len 30 --threads 1]

Measured with the defaults on the project's 2-core CPU machine (shared, 1 thread): incremental 24.0
sentences/s, no incremental state 4.0 (6.0x the time), SequenceGenerator beam 1 20.8, beam 5 6.6; in one
update generation took 22 % (2.8 s), forward+backward 76 %, Adam 2 %.
"""

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary

import fairseq_xlm  # noqa: F401
from fairseq_xlm.data.backtranslation import backtranslate_sample, beam_decode, greedy_decode
from fairseq_xlm.models.factory import build_model


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
    a, b = 0.0, args.gen_len
    decoders = {
        "ours, incremental": lambda: greedy_decode(model, net_input, a, b),
        "ours, no incremental state": lambda: greedy_decode(model, net_input, a, b, incremental=False),
        "fairseq SequenceGenerator, beam 1": lambda: beam_decode(model, net_input, 1, a, b),
        "fairseq SequenceGenerator, beam 5": lambda: beam_decode(model, net_input, 5, a, b),
    }
    model.eval()
    reference = None
    for name, fn in decoders.items():  # warm-up (first calls allocate) and a check that greedy agrees
        hyps = fn()
        if name != "fairseq SequenceGenerator, beam 5":
            tokens = [h.tolist() for h in hyps]
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
            dt, bt = timed(lambda: backtranslate_sample(model, mono, 1 - lang, 1, 0.0, args.gen_len))
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
    parser.add_argument("--gen-len", type=int, default=30, help="generated tokens per sentence")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    d, model = make_model(args)

    print(f"# back-translation generation: xlm_mt d={args.dim}, {args.layers}+{args.layers} layers, "
          f"vocab {args.vocab}, batch {args.batch} x {args.src_len} source tokens -> {args.gen_len} tokens, "
          f"CPU fp32, {args.threads} thread(s), median of {args.repeats}\n")
    decoders = bench_decoders(model, d, args)
    base = decoders["ours, incremental"]
    print("| decoder | seconds / batch | sentences / s | relative to ours, incremental |")
    print("|---|---:|---:|---:|")
    for name, sec in decoders.items():
        print(f"| {name} | {sec:.3f} | {args.batch / sec:.1f} | {sec / base:.2f}x time |")

    parts = bench_update(model, d, args)
    total = sum(parts.values())
    print("\n| one AE + BT update (ae en,es; bt en-es-en,es-en-es) | seconds | share |")
    print("|---|---:|---:|")
    for name, sec in parts.items():
        print(f"| {name} | {sec:.3f} | {100 * sec / total:.0f} % |")
    print(f"| total | {total:.3f} | 100 % |")


if __name__ == "__main__":
    main()
