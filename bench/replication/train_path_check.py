"""The MLM loss and gradients of the CPU training path (model.train(), dropout 0) against the eval path and
against the full forward (no predicted-rows shortcut), on real valid batches of a pretrained checkpoint.
Usage: python bench/replication/train_path_check.py OUT CKPT   (OUT: the study's data-bin)"""
import sys
import torch
from fairseq import checkpoint_utils
import fairseq_xlm  # noqa: F401

out, ckpt = sys.argv[1], sys.argv[2]
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": out, "dropout": 0.0, "attention_dropout": 0.0})
model = models[0]
for m in model.modules():  # every dropout module off, whatever its class (train mode, deterministic)
    if hasattr(m, "p") and isinstance(getattr(m, "p"), float):
        m.p = 0.0
pad = task.dictionary.pad()
task.load_dataset("valid")
itr = task.get_batch_iterator(task.datasets["valid"], max_sentences=16, max_tokens=None).next_epoch_itr(shuffle=False)
worst_loss, worst_grad, n = 0.0, 0.0, 0
for sample in itr:
    if sample["net_input"]["causal"]:
        continue
    ni, tgt = sample["net_input"], sample["target"]
    pred = tgt.ne(pad)
    res = []
    for mode, rows in (("train", True), ("train", False), ("eval", True)):
        model.train(mode == "train")
        model.zero_grad()
        if rows:
            logits, _ = model(**ni, masked_tokens=pred)
        else:
            full, _ = model(**ni)
            logits = full[pred]
        loss = torch.nn.functional.cross_entropy(logits.float(), tgt[pred], reduction="sum")
        loss.backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        res.append((loss.item(), g.clone()))
    for l, g in res[1:]:
        worst_loss = max(worst_loss, abs(l - res[0][0]) / abs(res[0][0]))
        worst_grad = max(worst_grad, float((g - res[0][1]).norm() / res[0][1].norm()))
    n += 1
print(f"{n} MLM batches: train path (predicted rows) vs train path (full) and eval path: max rel. loss diff "
      f"{worst_loss:.2e}, max rel. gradient diff {worst_grad:.2e}")
