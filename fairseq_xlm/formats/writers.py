"""Writers: ``Released`` -> a fairseq_xlm checkpoint directory or an HF ``XLMWithLMHeadModel`` directory,
each staged in a temporary sibling and moved into place."""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from typing import List

import torch

from ..data import layout
from ..models.memory_config import to_authors_params
from ..models.xlm_transformer import XlmConfig
from .hf_tokenizer import build_tokenizer
from .readers import _load_dict_file
from .released import (CHECKPOINT, CLS_HEAD, DICT, HF_CLS_HEAD, HF_HEAD, HF_SUMMARY, N_SPECIALS, SPM, TIED_OUTPUT,
                       Released, rename)

@contextmanager
def staged_dir(out_dir: str, force: bool):
    """Yield a temporary sibling of ``out_dir``; on success move it (or each file) into place atomically."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=os.path.dirname(out_dir))
    try:
        yield tmp
        if not os.path.exists(out_dir):
            os.rename(tmp, out_dir)
            return
        if not os.path.isdir(out_dir):
            raise NotADirectoryError(f"{out_dir}: exists and is not a directory")
        clash = [n for n in sorted(os.listdir(tmp)) if os.path.exists(os.path.join(out_dir, n))]
        if clash and not force:
            raise FileExistsError(f"{out_dir}: would overwrite {clash}; pass --force or choose a new directory")
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dict_lines(rel: Released) -> List[str]:
    """dict.txt rows for ids >= 4 (fairseq adds its own four specials); the mask is named <mask>."""
    rename_mask = layout.MASK not in rel.words and rel.mask_index >= N_SPECIALS
    lines = []
    for i in range(N_SPECIALS, len(rel.words)):
        word = layout.MASK if rename_mask and i == rel.mask_index else rel.words[i]
        lines.append(f"{word} {rel.counts[i] if rel.counts else 0}\n")
    return lines


def write_fairseq(rel: Released, out_dir: str, force: bool = False, source: str = "") -> str:
    """OUT_DIR/checkpoint.pt (an ``xlm_transformer`` checkpoint) and OUT_DIR/dict.txt; returns the checkpoint."""
    shape = rel.shape()
    if rel.langs is None:
        raise ValueError(f"{source}: the checkpoint does not name its languages; pass --langs (in id order)")
    lang_table = "lang_embeddings.weight" in rel.state
    model_cfg = asdict(XlmConfig())
    model_cfg.update(
        _name="xlm_transformer", encoder_embed_dim=shape["emb_dim"], encoder_layers=shape["n_layers"],
        encoder_attention_heads=rel.n_heads, encoder_ffn_embed_dim=shape["ffn_dim"], dropout=rel.dropout,
        attention_dropout=rel.attention_dropout, activation_fn="gelu" if rel.gelu else "relu",
        sinusoidal_embeddings=rel.sinusoidal, no_lang_embeddings=not lang_table, n_langs=len(rel.langs),
        max_positions=shape["max_positions"], layer_norm_eps=rel.layer_norm_eps, **rel.memory,
    )
    # what setup_task needs to rebuild the task around the model (checkpoint_utils loaders)
    task_cfg = {"_name": "xlm_pretrain", "data": os.path.abspath(out_dir), "langs": ",".join(rel.langs),
                "clm_steps" if rel.causal else "mlm_steps": ",".join(rel.langs)}
    weights = rename(rel.state, to_ours=True, where=source)
    if rel.head is not None:  # a fine-tuned classifier: its task, evaluated on the data given at load time
        task_cfg = {"_name": "xnli", "cls_subdir": "xnli", **rel.cls_task, "data": os.path.abspath(out_dir),
                    "langs": ",".join(rel.langs), "num_classes": len(rel.labels or []),
                    "classifier_dropout": rel.head_dropout}
        weights.update({CLS_HEAD + k: v for k, v in rel.head.items()})
    with staged_dir(out_dir, force) as tmp:
        state = {
            "args": None,
            "cfg": {"model": model_cfg, "task": task_cfg},
            "model": weights,
            "optimizer_history": [{"criterion_name": "none", "optimizer_name": "none",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 0}],
            "last_optimizer_state": None,
            "extra_state": {"xlm_convert": {"source": source, "causal": rel.causal, "labels": rel.labels,
                                            "lang2id": {lang: i for i, lang in enumerate(rel.langs)}}},
        }
        torch.save(state, os.path.join(tmp, CHECKPOINT))
        _write_dict(rel, os.path.join(tmp, DICT))
        if SPM in rel.files:
            shutil.copyfile(rel.files[SPM], os.path.join(tmp, SPM))
        size = len(layout.load_dictionary(tmp))
        if size != shape["n_words"]:  # e.g. a vocabulary without any mask symbol: <mask> was appended
            raise ValueError(f"{source}: dict.txt loads as {size} symbols with <mask>, not the model's "
                             f"{shape['n_words']}; the vocabulary has no mask symbol at index {rel.mask_index}")
    return os.path.join(out_dir, CHECKPOINT)


def _write_dict(rel: Released, path: str) -> None:
    lines = _dict_lines(rel)
    given = rel.files.get(DICT)
    if given:  # keep a carried dict.txt byte for byte (counts, comments) when it holds the same symbols
        fairseq_order = ["<s>", "<pad>", "</s>", "<unk>"] + [line.rsplit(" ", 1)[0] for line in lines]
        if _load_dict_file(given).symbols == fairseq_order:
            shutil.copyfile(given, path)
            return
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def write_hf(rel: Released, out_dir: str, force: bool = False, source: str = "") -> None:
    """An ``XLMWithLMHeadModel`` directory: config.json, model.safetensors, vocab.json, README.md."""
    from safetensors.torch import save_file

    shape = rel.shape()
    if rel.memory:
        raise ValueError(f"{source}: HF's XLM has no product-key memory layers; convert it to the authors' "
                         f"format instead (fairseq-to-xlm)")
    if shape["ffn_dim"] != 4 * shape["emb_dim"]:
        raise ValueError(f"{source}: FFN size {shape['ffn_dim']} is not 4 x {shape['emb_dim']}, which HF's XLM "
                         f"hard-codes")
    langs = rel.langs or []
    config = {
        "architectures": ["XLMWithLMHeadModel"], "model_type": "xlm", "vocab_size": shape["n_words"],
        "emb_dim": shape["emb_dim"], "n_layers": shape["n_layers"], "n_heads": rel.n_heads,
        "dropout": rel.dropout, "attention_dropout": rel.attention_dropout, "gelu_activation": rel.gelu,
        "sinusoidal_embeddings": rel.sinusoidal, "causal": rel.causal, "asm": False,
        "n_langs": max(shape["n_langs"], len(langs), 1), "use_lang_emb": shape["n_langs"] > 0,
        "max_position_embeddings": shape["max_positions"], "layer_norm_eps": rel.layer_norm_eps,
        "embed_init_std": shape["emb_dim"] ** -0.5, "is_encoder": True, "tie_word_embeddings": True,
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "unk_index": 3,
        "mask_index": rel.mask_index, "mask_token_id": rel.mask_index,
        "lang2id": {lang: i for i, lang in enumerate(langs)} or None,
        "id2lang": {str(i): lang for i, lang in enumerate(langs)} or None,
    }
    tensors = {(k if k.startswith(HF_HEAD) else "transformer." + k): v.contiguous() for k, v in rel.state.items()}
    if rel.head is not None:  # XLMForSequenceClassification: sequence_summary is our first-position Linear
        rows = rel.head["weight"].size(0)
        names = rel.labels or ["LABEL_0"]
        config.update(architectures=["XLMForSequenceClassification"], num_labels=rows,
                      id2label={str(i): name for i, name in enumerate(names)},
                      label2id={name: i for i, name in enumerate(names)},
                      problem_type="single_label_classification" if rel.labels else "regression",
                      summary_first_dropout=rel.head_dropout, **HF_SUMMARY)
        tensors.update({HF_CLS_HEAD + k: v.contiguous() for k, v in rel.head.items()})
    with staged_dir(out_dir, force) as tmp:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        for name, obj in (("config.json", config), ("vocab.json", {w: i for i, w in enumerate(rel.words)})):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, ensure_ascii=False, indent=2)
        for name, path in rel.files.items():
            shutil.copyfile(path, os.path.join(tmp, name))
        if SPM in rel.files:  # tokenizer.json + tokenizer_config.json: AutoTokenizer gives our ids
            build_tokenizer(rel.files[SPM], rel.words, rel.mask_index, shape["max_positions"]).save_pretrained(tmp)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(_HF_README.format(source=source or "a fairseq_xlm checkpoint", langs=",".join(langs) or "-",
                                      model=config["architectures"][0],
                                      tokenizer=_WITH_TOKENIZER if SPM in rel.files else _WITHOUT_TOKENIZER))


def write_authors(rel: Released, out_path: str, force: bool = False, source: str = "") -> str:
    """The authors' ``.pth`` (``model``, ``dico_*``, ``params``) that their ``TransformerModel`` loads, memories
    and their options included; written to a temporary sibling and renamed."""
    shape = rel.shape()
    out_path = os.path.abspath(out_path)
    if os.path.exists(out_path) and not force:
        raise FileExistsError(f"{out_path}: exists; pass --force or choose a new file")
    langs = rel.langs or []
    state = dict(rel.state)
    state[TIED_OUTPUT] = state["embeddings.weight"]
    words = list(rel.words)
    if rel.mask_index == 5 and words[5] == layout.MASK:  # their mask symbol, which dict.txt calls <mask>
        words[5] = "<special1>"
    params = {
        "n_words": shape["n_words"], "emb_dim": shape["emb_dim"], "n_layers": shape["n_layers"],
        "n_heads": rel.n_heads, "dropout": rel.dropout, "attention_dropout": rel.attention_dropout,
        "gelu_activation": rel.gelu, "sinusoidal_embeddings": rel.sinusoidal, "share_inout_emb": True,
        "asm": False, "n_langs": max(shape["n_langs"], len(langs), 1), "use_lang_emb": shape["n_langs"] > 0,
        "id2lang": dict(enumerate(langs)), "lang2id": {lang: i for i, lang in enumerate(langs)},
        "bos_index": 0, "eos_index": 1, "pad_index": 2, "unk_index": 3, "mask_index": rel.mask_index,
        "max_position_embeddings": shape["max_positions"],
        "clm_steps" if rel.causal else "mlm_steps": [(lang, None) for lang in langs],
        **to_authors_params(rel.memory, shape["n_layers"]),
    }
    data = {"model": state, "dico_id2word": dict(enumerate(words)),
            "dico_word2id": {w: i for i, w in enumerate(words)},
            "dico_counts": {w: (rel.counts[i] if rel.counts else 0) for i, w in enumerate(words)},
            "params": params}
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = out_path + ".tmp"
    torch.save(data, tmp)
    os.replace(tmp, out_path)
    return out_path


_HF_README = """# XLM converted by fairseq_xlm

Converted from {source} by `python -m fairseq_xlm.cli.convert fairseq-to-hf`. Load it with
`transformers.{model}.from_pretrained(this_dir)`; languages (`langs=` ids, config `lang2id`): {langs}.

{tokenizer}
Ids follow the authors' layout: `<s>`=0, `</s>`=1, `<pad>`=2, `<unk>`=3; sentences are `</s> s </s>` (pairs
`</s> a </s> b </s>`) as in fairseq_xlm's classification tasks. `dict.txt` is the fairseq dictionary.
"""

_WITH_TOKENIZER = """Tokenization is **sentencepiece** (spm.model) as in fairseq_xlm:
`AutoTokenizer.from_pretrained(this_dir)` loads `tokenizer.json`, which gives exactly fairseq_xlm's ids, so
`pipeline("fill-mask", model=this_dir)` works. HF passes no `langs=` there, so the language embeddings are left out (as `XLMWithLMHeadModel` does
without `langs`); call the model with `langs=torch.full_like(input_ids, lang2id[lang])` to include them.
"""

_WITHOUT_TOKENIZER = """Tokenization is **sentencepiece** (the spm.model of its data-bin, not included, so no HF tokenizer
was written), not HF's XLMTokenizer (Moses + BPE): encode text with sentencepiece, then map pieces to ids with
`vocab.json`.
"""
