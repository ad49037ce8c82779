"""Readers: the authors' released ``.pth``, an HF ``XLMWithLMHeadModel`` directory, a fairseq_xlm checkpoint
-> ``Released``; and ``load_model`` (a checkpoint as a ready ``XlmModel``)."""

import argparse
import json
import logging
import os
from dataclasses import asdict
from typing import Dict, Optional, Sequence

import torch
from fairseq.data import Dictionary
from torch import Tensor

from .. import safe_load
from ..data import layout
from ..models import factory
from ..models.modules import sinusoidal_table
from ..models.memory_config import MemoryConfig, from_authors_params
from ..models.xlm_transformer import XlmConfig
from .released import (CLS_HEAD, DICT, HF_CLS_HEAD, HF_HEAD, HF_SUMMARY, SPM, TIED_OUTPUT, Released,
                       _check_released, rename)

logger = logging.getLogger(__name__)

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
        memory=from_authors_params(params, path),
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
    state, tied, head = {}, None, {}
    for key, value in _hf_weights(hf_dir).items():
        if key.endswith("position_ids"):
            continue  # a buffer of 0..n-1, not a weight
        if key.startswith(HF_CLS_HEAD):
            head[key[len(HF_CLS_HEAD):]] = value
        elif key == TIED_OUTPUT:
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
    if head:
        _hf_classifier(rel, head, config, hf_dir)
    _check_tied(tied, rel, hf_dir)
    _check_released(rel, hf_dir, config.get("n_layers"), config.get("emb_dim"))
    return rel


def _hf_classifier(rel: Released, head: Dict[str, Tensor], config: dict, hf_dir: str) -> None:
    """An ``XLMForSequenceClassification``'s head into ``rel``: only the summary our tasks have (dropout and
    Linear on the first position) converts exactly."""
    odd = {k: config.get(k) for k, want in HF_SUMMARY.items() if config.get(k, want) != want}
    if odd or sorted(head) != ["bias", "weight"]:
        raise ValueError(f"{hf_dir}/config.json: a sequence summary {odd or sorted(head)} that fairseq_xlm's "
                         f"classifier (Linear on the first position: {HF_SUMMARY}) cannot hold")
    rel.head = head
    rel.head_dropout = float(config.get("summary_first_dropout", 0.1))
    id2label = {int(i): name for i, name in (config.get("id2label") or {}).items()}
    rows = head["weight"].size(0)
    if rows > 1:  # one output is a regression (STS-B): no class names
        rel.labels = [id2label.get(i, f"LABEL_{i}") for i in range(rows)]


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
    weights = dict(state["model"])
    head = {k[len(CLS_HEAD):]: weights.pop(k) for k in list(weights) if k.startswith(CLS_HEAD)}
    theirs = rename(weights, to_ours=False, where=ckpt)
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
        memory=({k: _cfg_get(model_cfg, k, getattr(MemoryConfig(), k)) for k in MemoryConfig.__dataclass_fields__
                 if k != "_name"} if _cfg_get(model_cfg, "use_memory", False) else {}),
    )
    if rel.n_heads <= 0:
        raise ValueError(f"{ckpt}: its cfg.model has no encoder_attention_heads; is it a fairseq_xlm checkpoint?")
    rel.files[DICT] = dict_path
    for folder in (os.path.dirname(os.path.abspath(dict_path)), os.path.dirname(os.path.abspath(ckpt))):
        if SPM not in rel.files and os.path.isfile(os.path.join(folder, SPM)):
            rel.files[SPM] = os.path.join(folder, SPM)
    if head:
        _fairseq_classifier(rel, head, task_cfg, ckpt)
    _check_released(rel, ckpt)
    return rel


def _fairseq_classifier(rel: Released, head: Dict[str, Tensor], task_cfg, ckpt: str) -> None:
    """A fine-tuned ``xnli`` / ``xlm_glue`` checkpoint's classifier into ``rel``, with the class names of its
    data's labels.txt (in id order; generic names when that file is gone; none for a regression)."""
    from ..data.classification_dataset import load_label_set

    rel.head = head
    rel.head_dropout = float(_cfg_get(task_cfg, "classifier_dropout", 0.0) or 0.0)
    rel.cls_task = {k: str(v) for k in ("_name", "cls_subdir", "glue_task")
                    if (v := _cfg_get(task_cfg, k)) is not None}
    rows = head["weight"].size(0)
    if rows == 1:
        return
    path = os.path.join(_cfg_get(task_cfg, "data") or "", rel.cls_task.get("cls_subdir", "xnli"), "labels.txt")
    if os.path.isfile(path):
        rel.labels = load_label_set(path)
    else:
        logger.warning("%s: %s is gone; the classes are named LABEL_0 .. LABEL_%d", ckpt, path, rows - 1)
        rel.labels = [f"LABEL_{i}" for i in range(rows)]


def _load_dict_file(path: str) -> Dictionary:
    """What ``layout.load_dictionary`` gives for a dict.txt that may have another file name."""
    dictionary = Dictionary.load(path)
    dictionary.add_symbol(layout.MASK)
    return dictionary


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


def release_langs(ckpt: str) -> list:
    """The languages (in id order) of a checkpoint ``convert xlm-to-fairseq`` wrote, read without loading
    its weights into memory (a release's checkpoint can hold gigabytes)."""
    safe_load.check_checkpoint_file(ckpt)
    safe_load.install()
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the 2019 legacy format cannot be memory-mapped
        state = safe_load.torch_load(ckpt)
    langs = _cfg_get(_cfg_get(state.get("cfg"), "task"), "langs")
    if not langs:
        raise ValueError(f"{ckpt}: its cfg.task names no languages; is it a converted release?")
    return layout.parse_langs(langs) if isinstance(langs, str) else list(langs)
