"""Convert XLM checkpoints between the authors' release, HF ``transformers`` and fairseq_xlm.

    python -m fairseq_xlm.convert xlm-to-fairseq mlm_enfr_1024.pth out/ [--langs en,fr]
    python -m fairseq_xlm.convert hf-to-fairseq hf_dir/ out/
    python -m fairseq_xlm.convert fairseq-to-hf checkpoints/checkpoint_best.pt hf_out/ [--dict DICT]

Every format is read into one neutral form, ``Released`` (the authors' parameter names and vocabulary
order, which HF shares), and written from it: each direction is one reader plus one writer, and
``KEY_TABLE`` maps parameter names both ways.

Vocabularies: the authors (and HF) number ``<s> </s> <pad> <unk>`` 0-3, fairseq numbers ``<s> <pad> </s>
<unk>`` 0-3; every later row keeps its index, so only rows 1 and 2 of the embeddings and the output bias
swap. The authors' mask ``<special1>`` (id 5) is written as ``<mask>`` in dict.txt, where our tasks'
``dictionary.add_symbol("<mask>")`` finds it.
"""

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from fairseq.data import Dictionary
from torch import Tensor

from . import safe_load
from .data import layout
from .models import factory
from .models.modules import sinusoidal_table
from .models.xlm_transformer import XlmConfig

logger = logging.getLogger(__name__)

AUTHORS_SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]  # ids 0-3 of the authors' and HF's vocabularies
N_SPECIALS = 4
CHECKPOINT, DICT, SPM = "checkpoint.pt", "dict.txt", "spm.model"

# (our name, the authors' name, indexed by vocabulary) -- one table for both directions.
# {n} is a layer number, {p} "weight" or "bias"; HF names are "transformer." + the authors' names,
# except the output layer (pred_layer.*), whose weight is tied to the token embeddings everywhere.
KEY_TABLE = [
    ("encoder.embeddings.embed_tokens.weight", "embeddings.weight", True),
    ("encoder.embeddings.embed_positions.weight", "position_embeddings.weight", False),
    ("encoder.embeddings.embed_langs.weight", "lang_embeddings.weight", False),
    ("encoder.embeddings.layernorm_embedding.{p}", "layer_norm_emb.{p}", False),
    ("encoder.layers.{n}.self_attn.q_proj.{p}", "attentions.{n}.q_lin.{p}", False),
    ("encoder.layers.{n}.self_attn.k_proj.{p}", "attentions.{n}.k_lin.{p}", False),
    ("encoder.layers.{n}.self_attn.v_proj.{p}", "attentions.{n}.v_lin.{p}", False),
    ("encoder.layers.{n}.self_attn.out_proj.{p}", "attentions.{n}.out_lin.{p}", False),
    ("encoder.layers.{n}.self_attn_layer_norm.{p}", "layer_norm1.{n}.{p}", False),
    ("encoder.layers.{n}.fc1.{p}", "ffns.{n}.lin1.{p}", False),
    ("encoder.layers.{n}.fc2.{p}", "ffns.{n}.lin2.{p}", False),
    ("encoder.layers.{n}.final_layer_norm.{p}", "layer_norm2.{n}.{p}", False),
    ("encoder.output_bias", "pred_layer.proj.bias", True),
]
TIED_OUTPUT = "pred_layer.proj.weight"
HF_HEAD = "pred_layer."


def _regex(template: str) -> "re.Pattern":
    rx = re.escape(template)
    rx = rx.replace(re.escape("{n}"), r"(?P<n>\d+)").replace(re.escape("{p}"), r"(?P<p>weight|bias)")
    return re.compile(rx)


_TO_OURS = [(_regex(theirs), ours, vocab) for ours, theirs, vocab in KEY_TABLE]
_TO_THEIRS = [(_regex(ours), theirs, vocab) for ours, theirs, vocab in KEY_TABLE]


def swap_specials(rows: Tensor) -> Tensor:
    """Rows 1 and 2 exchanged: authors' (</s>, <pad>) <-> fairseq's (<pad>, </s>); its own inverse."""
    perm = torch.arange(rows.size(0))
    perm[1], perm[2] = 2, 1
    return rows.index_select(0, perm)


def rename(state: Dict[str, Tensor], to_ours: bool, where: str) -> Dict[str, Tensor]:
    """Map parameter names (and vocabulary rows) between our and the authors' layouts via KEY_TABLE."""
    table = _TO_OURS if to_ours else _TO_THEIRS
    out, unknown = {}, []
    for key, value in state.items():
        for rx, target, vocab in table:
            match = rx.fullmatch(key)
            if match:
                out[target.format(**match.groupdict())] = swap_specials(value) if vocab else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{where}: parameters {unknown[:6]}{' ...' if len(unknown) > 6 else ''} are not part of an XLM "
            f"encoder with an LM head (only those convert; encoder-decoder checkpoints do not)"
        )
    return out


@dataclass
class Released:
    """A checkpoint in the authors' names and vocabulary order (HF shares both)."""

    state: Dict[str, Tensor]  # the authors' names without prefix and without the tied pred_layer.proj.weight
    words: List[str]  # the vocabulary in the authors' order
    langs: Optional[List[str]]  # language codes in id order; None when the source does not name them
    n_heads: int
    gelu: bool = True
    sinusoidal: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    causal: bool = False  # the HF config flag; fairseq_xlm chooses causal per forward call instead
    mask_index: int = 5
    counts: Optional[List[int]] = None
    files: Dict[str, str] = field(default_factory=dict)  # dict.txt / spm.model to carry along

    def shape(self) -> Dict[str, int]:
        """Sizes read from the weights themselves (so a config can be checked against them)."""
        layers = {int(m.group(1)) for k in self.state if (m := re.match(r"attentions\.(\d+)\.", k))}
        lang = self.state.get("lang_embeddings.weight")
        return {
            "n_words": self.state["embeddings.weight"].size(0),
            "emb_dim": self.state["embeddings.weight"].size(1),
            "n_layers": len(layers),
            "ffn_dim": self.state["ffns.0.lin1.weight"].size(0),
            "n_langs": 0 if lang is None else lang.size(0),
            "max_positions": self.state["position_embeddings.weight"].size(0),
        }


def _check_released(rel: Released, where: str, n_layers: Optional[int] = None, emb_dim: Optional[int] = None):
    """One clear error when the weights, the vocabulary and the stated hyper-parameters disagree."""
    for key in ("embeddings.weight", "ffns.0.lin1.weight", "position_embeddings.weight", HF_HEAD + "proj.bias"):
        if key not in rel.state:
            raise ValueError(f"{where}: no parameter '{key}'; is this an XLM model with its LM head?")
    shape = rel.shape()
    if len(rel.words) != shape["n_words"]:
        raise ValueError(f"{where}: the vocabulary has {len(rel.words)} words but the embeddings "
                         f"{shape['n_words']} rows")
    if rel.words[:N_SPECIALS] != AUTHORS_SPECIALS:
        raise ValueError(f"{where}: the vocabulary starts with {rel.words[:N_SPECIALS]}, expected "
                         f"{AUTHORS_SPECIALS} (the authors' and HF's special ids)")
    bad = [w for w in rel.words if not w or " " in w or "\n" in w or "\r" in w]
    seen = set()
    bad += [w for w in rel.words if w in seen or seen.add(w)]  # repeated words
    if bad:
        raise ValueError(f"{where}: the vocabulary has empty, blank-containing or repeated words {bad[:5]}; "
                         f"dict.txt cannot hold them")
    for name, stated in (("n_layers", n_layers), ("emb_dim", emb_dim)):
        if stated is not None and stated != shape[name]:
            raise ValueError(f"{where}: config says {name}={stated} but the weights have {shape[name]}")
    if rel.langs is not None and shape["n_langs"] and len(rel.langs) != shape["n_langs"]:
        raise ValueError(f"{where}: {len(rel.langs)} languages named ({','.join(rel.langs)}) but "
                         f"{shape['n_langs']} language embeddings")


def select_langs(rel: Released, wanted: Optional[Sequence[str]], where: str) -> Released:
    """Name the languages (unnamed sources) or keep/reorder a subset of their embeddings (``--langs``)."""
    if not wanted:
        return rel
    table = rel.state.get("lang_embeddings.weight")
    if rel.langs is None or table is None:
        if table is not None and len(wanted) != table.size(0):
            raise ValueError(f"--langs names {len(wanted)} languages but {where} has {table.size(0)} "
                             f"language embeddings")
        rel.langs = list(wanted)
        return rel
    missing = [lang for lang in wanted if lang not in rel.langs]
    if missing:
        raise ValueError(f"--langs {','.join(wanted)}: {missing} not among the languages of {where} "
                         f"({','.join(rel.langs)})")
    if len(wanted) == 1:
        raise ValueError(f"--langs {wanted[0]}: keep at least two languages of the multilingual {where} "
                         f"(a one-language model has no language embeddings)")
    rel.state["lang_embeddings.weight"] = table[[rel.langs.index(lang) for lang in wanted]].clone()
    rel.langs = list(wanted)
    return rel


# ----------------------------------------------------------------------------------------------- readers


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")


def read_authors(path: str) -> Released:
    """The authors' released ``.pth`` (``model``, ``dico_*``, ``params``), loaded without unpickling code."""
    data = safe_load.torch_load(path)
    if not isinstance(data, dict) or "model" not in data or "dico_id2word" not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not an authors' XLM checkpoint (expected 'model', 'dico_id2word', "
                         f"'params'; found {keys})")
    params = data.get("params") or {}
    params = vars(params) if isinstance(params, argparse.Namespace) else dict(params)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in data["model"].items()}
    tied = state.pop(TIED_OUTPUT, None)
    id2word = {int(i): w for i, w in data["dico_id2word"].items()}
    if sorted(id2word) != list(range(len(id2word))):
        raise ValueError(f"{path}: dico_id2word ids are not 0..{len(id2word) - 1}")
    words = [id2word[i] for i in range(len(id2word))]
    counts = data.get("dico_counts") or {}
    lang2id = params.get("lang2id") or {lang: i for i, lang in (params.get("id2lang") or {}).items()}
    langs = sorted(lang2id, key=lambda lang: int(lang2id[lang])) if lang2id else None
    if "n_heads" not in params:
        raise ValueError(f"{path}: 'params' has no n_heads; cannot rebuild the attention layout")
    rel = Released(
        state=state, words=words, langs=langs, n_heads=int(params["n_heads"]),
        gelu=bool(params.get("gelu_activation", False)),
        sinusoidal=bool(params.get("sinusoidal_embeddings", False)),
        dropout=float(params.get("dropout", 0.0)), attention_dropout=float(params.get("attention_dropout", 0.0)),
        causal=bool(params.get("clm_steps")) and not params.get("mlm_steps"),
        mask_index=int(params.get("mask_index", 5)),
        counts=[int(counts.get(w, 0)) for w in words],
    )
    if params.get("asm"):
        raise ValueError(f"{path}: adaptive softmax output layers (asm) are not supported")
    if not params.get("use_lang_emb", True):
        rel.state.pop("lang_embeddings.weight", None)  # present in the weights but never used
    _check_tied(tied, rel, path)
    _check_released(rel, path, params.get("n_layers"), params.get("emb_dim"))
    return rel


def _check_tied(tied: Optional[Tensor], rel: Released, where: str) -> None:
    if tied is not None and not torch.equal(tied, rel.state.get("embeddings.weight", tied)):
        raise ValueError(f"{where}: the output projection is not tied to the token embeddings; "
                         f"fairseq_xlm ties them, so this model cannot be converted exactly")


def _hf_weights(hf_dir: str) -> Dict[str, Tensor]:
    """All tensors of an HF model directory (safetensors or .bin, single file or sharded)."""
    for index_name, loader in (("model.safetensors", "st"), ("pytorch_model.bin", "pt")):
        single = os.path.join(hf_dir, index_name)
        index = single + ".index.json"
        files = [single] if os.path.isfile(single) else []
        if not files and os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                files = sorted({os.path.join(hf_dir, v) for v in json.load(f)["weight_map"].values()})
        if files:
            state = {}
            for path in files:
                if loader == "st":
                    from safetensors.torch import load_file

                    state.update(load_file(path))
                else:
                    state.update(safe_load.torch_load(path))
            return state
    raise FileNotFoundError(f"{hf_dir}: no model.safetensors or pytorch_model.bin (is it an HF model directory?)")


def read_hf(hf_dir: str) -> Released:
    """A transformers ``XLMWithLMHeadModel`` directory (config.json, weights, vocab.json)."""
    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"{hf_dir}: not a directory (expected an HF model directory)")
    config, vocab = (_read_json(os.path.join(hf_dir, name)) for name in ("config.json", "vocab.json"))
    specials = {"bos": (config.get("bos_token_id", config.get("bos_index", 0)), 0),
                "eos": (config.get("eos_token_id", config.get("eos_index", 1)), 1),
                "pad": (config.get("pad_token_id", config.get("pad_index", 2)), 2),
                "unk": (config.get("unk_index", 3), 3)}
    odd = {k: v for k, (v, want) in specials.items() if v != want}
    if odd or config.get("model_type", "xlm") != "xlm" or config.get("asm") or "n_heads" not in config:
        raise ValueError(f"{hf_dir}/config.json: not a convertible XLM model (model_type "
                         f"{config.get('model_type')}, n_heads {config.get('n_heads')}, asm {config.get('asm')}, "
                         f"unusual special ids {odd})")
    state, tied = {}, None
    for key, value in _hf_weights(hf_dir).items():
        if key.endswith("position_ids"):
            continue  # a buffer of 0..n-1, not a weight
        if key == TIED_OUTPUT:
            tied = value
        elif key.startswith(HF_HEAD):
            state[key] = value
        elif key.startswith("transformer."):
            state[key[len("transformer."):]] = value
        else:
            state[key] = value  # rename() reports it as unknown
    ids = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ids] != list(range(len(ids))):
        raise ValueError(f"{hf_dir}/vocab.json: ids are not 0..{len(ids) - 1}")
    lang2id = config.get("lang2id") or {}
    rel = Released(
        state=state, words=[w for w, _ in ids], langs=sorted(lang2id, key=lang2id.get) if lang2id else None,
        n_heads=int(config["n_heads"]), gelu=bool(config.get("gelu_activation", True)),
        sinusoidal=bool(config.get("sinusoidal_embeddings", False)),
        dropout=float(config.get("dropout", 0.1)), attention_dropout=float(config.get("attention_dropout", 0.1)),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)), causal=bool(config.get("causal", False)),
        mask_index=int(config.get("mask_index", 5)),
    )
    if rel.sinusoidal and "position_embeddings.weight" not in state and "embeddings.weight" in state:
        n_pos, dim = int(config.get("max_position_embeddings", 512)), state["embeddings.weight"].size(1)
        state["position_embeddings.weight"] = sinusoidal_table(n_pos, dim)  # not saved by some versions
    if not config.get("use_lang_emb", True) or int(config.get("n_langs", 1)) <= 1:
        state.pop("lang_embeddings.weight", None)
    for name in (DICT, SPM):
        if os.path.isfile(os.path.join(hf_dir, name)):
            rel.files[name] = os.path.join(hf_dir, name)
    _check_tied(tied, rel, hf_dir)
    _check_released(rel, hf_dir, config.get("n_layers"), config.get("emb_dim"))
    return rel


def _read_json(path: str) -> dict:
    _require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _cfg_get(node, key, default=None):
    """``node[key]`` for dicts and DictConfigs, ``node.key`` for namespaces; ``default`` when absent."""
    return node.get(key, default) if node is not None and hasattr(node, "get") else getattr(node, key, default)


def read_fairseq(ckpt: str, dict_path: Optional[str] = None, langs: Optional[Sequence[str]] = None) -> Released:
    """A fairseq_xlm ``xlm_transformer`` checkpoint plus its dict.txt (``--dict``, beside it, or its data)."""
    safe_load.check_checkpoint_file(ckpt)
    state = safe_load.load_checkpoint(ckpt)
    cfg = state.get("cfg")
    model_cfg, task_cfg = _cfg_get(cfg, "model"), _cfg_get(cfg, "task")
    theirs = rename(state["model"], to_ours=False, where=ckpt)
    if dict_path is None:
        beside = [os.path.dirname(os.path.abspath(ckpt)), _cfg_get(task_cfg, "data") or ""]
        found = [os.path.join(d, DICT) for d in beside if d and os.path.isfile(os.path.join(d, DICT))]
        if not found:
            raise FileNotFoundError(f"{ckpt}: no {DICT} beside it or in its data directory; pass --dict")
        dict_path = found[0]
    _require_file(dict_path)
    dictionary = _load_dict_file(dict_path)
    rows = theirs["embeddings.weight"].size(0)
    if len(dictionary) != rows:
        raise ValueError(f"{ckpt} has a vocabulary of {rows} rows but {dict_path} gives {len(dictionary)} "
                         f"symbols (with <mask>): pass the dict.txt the checkpoint was trained with (--dict)")
    words, counts = list(dictionary.symbols), list(dictionary.count)
    for seq in (words, counts):
        seq[1], seq[2] = seq[2], seq[1]
    task_langs = langs or _cfg_get(task_cfg, "langs")
    if isinstance(task_langs, str):
        task_langs = layout.parse_langs(task_langs)
    extra = _cfg_get(state.get("extra_state"), "xlm_convert") or {}
    clm_only = bool(_cfg_get(task_cfg, "clm_steps")) and not _cfg_get(task_cfg, "mlm_steps")
    rel = Released(
        state=theirs, words=words, langs=list(task_langs) if task_langs else None,
        n_heads=int(_cfg_get(model_cfg, "encoder_attention_heads", 0)),
        gelu=str(_cfg_get(model_cfg, "activation_fn", "gelu")) == "gelu",
        sinusoidal=bool(_cfg_get(model_cfg, "sinusoidal_embeddings", False)),
        dropout=float(_cfg_get(model_cfg, "dropout", 0.1)),
        attention_dropout=float(_cfg_get(model_cfg, "attention_dropout", 0.1)),
        layer_norm_eps=float(_cfg_get(model_cfg, "layer_norm_eps", 1e-12)),
        causal=bool(extra.get("causal", clm_only)), mask_index=dictionary.index(layout.MASK), counts=counts,
    )
    if rel.n_heads <= 0:
        raise ValueError(f"{ckpt}: its cfg.model has no encoder_attention_heads; is it a fairseq_xlm checkpoint?")
    rel.files[DICT] = dict_path
    for folder in (os.path.dirname(os.path.abspath(dict_path)), os.path.dirname(os.path.abspath(ckpt))):
        if SPM not in rel.files and os.path.isfile(os.path.join(folder, SPM)):
            rel.files[SPM] = os.path.join(folder, SPM)
    _check_released(rel, ckpt)
    return rel


def _load_dict_file(path: str) -> Dictionary:
    """What ``layout.load_dictionary`` gives for a dict.txt that may have another file name."""
    dictionary = Dictionary.load(path)
    dictionary.add_symbol(layout.MASK)
    return dictionary


# ----------------------------------------------------------------------------------------------- writers


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
        max_positions=shape["max_positions"], layer_norm_eps=rel.layer_norm_eps,
    )
    with staged_dir(out_dir, force) as tmp:
        state = {
            "args": None,
            "cfg": {"model": model_cfg, "task": {
                # what setup_task needs to rebuild the task around the model (checkpoint_utils loaders)
                "_name": "xlm_pretrain", "data": os.path.abspath(out_dir), "langs": ",".join(rel.langs),
                "clm_steps" if rel.causal else "mlm_steps": ",".join(rel.langs)}},
            "model": rename(rel.state, to_ours=True, where=source),
            "optimizer_history": [{"criterion_name": "none", "optimizer_name": "none",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 0}],
            "last_optimizer_state": None,
            "extra_state": {"xlm_convert": {"source": source, "causal": rel.causal,
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
    with staged_dir(out_dir, force) as tmp:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        for name, obj in (("config.json", config), ("vocab.json", {w: i for i, w in enumerate(rel.words)})):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, ensure_ascii=False, indent=2)
        for name, path in rel.files.items():
            shutil.copyfile(path, os.path.join(tmp, name))
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(_HF_README.format(source=source or "a fairseq_xlm checkpoint", langs=",".join(langs) or "-",
                                      spm="spm.model (included)" if SPM in rel.files else "the spm.model of its data-bin"))


_HF_README = """# XLM converted by fairseq_xlm

Converted from {source} by `python -m fairseq_xlm.convert fairseq-to-hf`. Load it with
`transformers.XLMWithLMHeadModel.from_pretrained(this_dir)`; languages (`langs=` ids, config `lang2id`): {langs}.

Tokenization is **sentencepiece** ({spm}), not HF's XLMTokenizer (Moses + BPE): encode text with
sentencepiece, then map pieces to ids with `vocab.json`. Ids follow the authors' layout: `<s>`=0, `</s>`=1,
`<pad>`=2, `<unk>`=3; sentences start with `</s>` as in fairseq_xlm. `dict.txt` is the fairseq dictionary.
"""


# --------------------------------------------------------------------------------------- loading helper


def load_model(ckpt: str, data_dir: Optional[str] = None, langs: Optional[Sequence[str]] = None):
    """Build an XlmModel from a converted (or trained) checkpoint and its data dictionary.

    ``data_dir`` holds dict.txt (default: beside the checkpoint); ``langs`` overrides the checkpoint's.
    Mismatched vocabularies or language counts raise ``XlmModel.load_state_dict``'s ValueError.
    """
    safe_load.check_checkpoint_file(ckpt)
    state = safe_load.load_checkpoint(ckpt)
    cfg = state["cfg"]
    dictionary = layout.load_dictionary(data_dir or os.path.dirname(os.path.abspath(ckpt)))
    langs = langs or layout.parse_langs(_cfg_get(cfg.task, "langs"))
    fields = {k: cfg.model[k] for k in asdict(XlmConfig()) if k != "_name" and k in cfg.model}
    fields["n_langs"] = len(langs)  # the model is built for the given languages; the weights are checked
    model = factory.build_model("xlm_transformer", dictionary, langs, **fields)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    return model


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m fairseq_xlm.convert`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("xlm-to-fairseq", help="the authors' released .pth -> OUT_DIR/checkpoint.pt + dict.txt")
    p.add_argument("src", metavar="SRC.pth", help="the authors' checkpoint (model, dico_*, params)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    p = sub.add_parser("hf-to-fairseq", help="an HF XLMWithLMHeadModel directory -> OUT_DIR/checkpoint.pt + dict.txt")
    p.add_argument("src", metavar="HF_DIR", help="directory with config.json, weights and vocab.json")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    for p in (sub.choices["xlm-to-fairseq"], sub.choices["hf-to-fairseq"]):
        p.add_argument("--langs", help="comma-separated languages to keep, in the new id order (default: all); "
                                       "required when the source does not name its languages")
    p = sub.add_parser("fairseq-to-hf", help="a fairseq_xlm xlm_transformer checkpoint -> an HF model directory")
    p.add_argument("src", metavar="CKPT", help="fairseq_xlm checkpoint (e.g. checkpoint_best.pt)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    p.add_argument("--dict", help="the dict.txt the model was trained with (default: beside CKPT or in its data)")
    p.add_argument("--langs", help="the checkpoint's languages in id order (default: from its task config)")
    p.add_argument("--causal", action="store_true", help="mark the HF config causal (a CLM-trained model)")
    for p in sub.choices.values():
        p.add_argument("--force", action="store_true", help="overwrite files that already exist in OUT_DIR")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one conversion; bad input exits 1 with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        langs = layout.parse_langs(args.langs) if args.langs else None
        if args.command == "fairseq-to-hf":
            rel = read_fairseq(args.src, args.dict, langs)
            rel.causal = rel.causal or args.causal
            write_hf(rel, args.out_dir, args.force, source=args.src)
        else:
            rel = read_authors(args.src) if args.command == "xlm-to-fairseq" else read_hf(args.src)
            write_fairseq(select_langs(rel, langs, args.src), args.out_dir, args.force, source=args.src)
    except (safe_load.CheckpointLoadError, ValueError, OSError) as err:
        print(f"fairseq_xlm.convert: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
