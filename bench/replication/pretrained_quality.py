"""Held-out quality of a replicate.sh study's pretrained checkpoints (read only): are they any good?

Per checkpoint, on the valid split of each language, with the MLM masks of the task (fixed for validation):
  mlm_loss      cross-entropy at the predicted positions (the criterion's path: last layer at those rows)
  full_path     the same from the full forward pass, then the rows selected (must equal mlm_loss: bug check)
  no_context    the same with every other non-pad token replaced by <mask> (does the model use context?)
  unigram       cross-entropy of the training-set unigram distribution of that language at the same positions
  acc           top-1 accuracy at the predicted positions
and the causal (next-token) perplexity of every checkpoint (the clm_* rows).
Usage: python bench/replication/pretrained_quality.py OUT ARM SEED   (OUT: a finished recipes/replicate.sh study)
"""
import math
import sys

import numpy as np
import torch
from fairseq import checkpoint_utils

import fairseq_xlm  # noqa: F401  registers the task and models

out, arm, seed = sys.argv[1], sys.argv[2], sys.argv[3]
path = f"{out}/runs/pre/{arm}/s{seed}/checkpoint_last.pt"
torch.manual_seed(0)
langs = ["en", "es", "ny"]
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
    [path], arg_overrides={"data": out, "mlm_steps": ",".join(langs), "clm_steps": ",".join(langs)})
model = models[0].eval()
d = task.dictionary
pad, mask_idx = d.pad(), task.mask_idx
task.load_dataset("valid")
ds = task.datasets["valid"]
itr = task.get_batch_iterator(ds, max_sentences=16, max_tokens=None).next_epoch_itr(shuffle=False)

# training unigram per language (add-one smoothed)
uni = {}
for l in langs:
    arr = np.fromfile(f"{out}/train.{l}.bin", dtype=np.uint16 if len(d) < 65500 else np.int32)
    c = np.bincount(arr, minlength=len(d)).astype(np.float64) + 1.0
    uni[l] = torch.tensor(np.log(c / c.sum()))

stats = {}
with torch.no_grad():
    for sample in itr:
        step = sample["step"]
        ni, tgt = sample["net_input"], sample["target"]
        pred = tgt.ne(pad)
        gold = tgt[pred]
        s = stats.setdefault(step, dict(n=0, mlm=0.0, full=0.0, noctx=0.0, uni=0.0, acc=0))
        logits, _ = model(**ni, masked_tokens=pred)
        lp = torch.log_softmax(logits.float(), -1)
        s["mlm"] += -lp.gather(1, gold[:, None]).sum().item()
        s["acc"] += int((lp.argmax(-1) == gold).sum())
        full, _ = model(**ni)
        lpf = torch.log_softmax(full.float(), -1)[pred]
        s["full"] += -lpf.gather(1, gold[:, None]).sum().item()
        if not ni["causal"]:
            src = ni["src_tokens"].clone()
            src[(~pred) & src.ne(pad)] = mask_idx
            nc, _ = model(**{**ni, "src_tokens": src}, masked_tokens=pred)
            s["noctx"] += -torch.log_softmax(nc.float(), -1).gather(1, gold[:, None]).sum().item()
        lang = step.split("_")[-1].split("-")[0]
        s["uni"] += -uni[lang][gold].sum().item()
        s["n"] += int(pred.sum())
for step, s in stats.items():
    n = s["n"]
    print(f"{arm} s{seed} {step}: n={n} ppl={math.exp(s['mlm']/n):.1f} full_path_ppl={math.exp(s['full']/n):.1f} "
          f"no_context_ppl={math.exp(s['noctx']/n) if s['noctx'] else float('nan'):.1f} "
          f"unigram_ppl={math.exp(s['uni']/n):.1f} acc={100*s['acc']/n:.1f}")
