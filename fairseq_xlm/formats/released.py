"""The neutral form every checkpoint format is read into and written from: ``Released``.

Every format is read into one neutral form, ``Released`` (the authors' parameter names and vocabulary
order, which HF shares), and written from it: each direction is one reader plus one writer, and
``KEY_TABLE`` maps parameter names both ways.

Vocabularies: the authors (and HF) number ``<s> </s> <pad> <unk>`` 0-3, fairseq numbers ``<s> <pad> </s>
<unk>`` 0-3; every later row keeps its index, so only rows 1 and 2 of the embeddings and the output bias
swap. The authors' mask ``<special1>`` (id 5) is written as ``<mask>`` in dict.txt, where our tasks'
``dictionary.add_symbol("<mask>")`` finds it.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

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
    # product-key memories ({w}: "in" replaces layer n's FFN, "after" follows it); {r}: the memory's own names
    ("encoder.layers.{n}.memory_{w}.{r}", "memories.{n}_{w}.{r}", False),
]
TIED_OUTPUT = "pred_layer.proj.weight"
HF_HEAD = "pred_layer."
# A fine-tuned classifier (tasks xnli, xlm_glue): dropout + Linear on the first position, which is exactly HF
# XLMForSequenceClassification's sequence_summary with summary_type "first", a projection to num_labels and no
# activation. Ours -> HF names of its two tensors:
CLS_HEAD = "classification_heads.xnli.out_proj."
HF_CLS_HEAD = "sequence_summary.summary."
HF_SUMMARY = {"summary_type": "first", "summary_use_proj": True, "summary_proj_to_labels": True,
              "summary_activation": None}


def _regex(template: str) -> "re.Pattern":
    rx = re.escape(template)
    rx = rx.replace(re.escape("{n}"), r"(?P<n>\d+)").replace(re.escape("{p}"), r"(?P<p>weight|bias)")
    rx = rx.replace(re.escape("{w}"), r"(?P<w>in|after)").replace(re.escape("{r}"), r"(?P<r>[\w.]+)")
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
    # a sequence classifier instead of the LM head: {"weight": (labels, dim), "bias": (labels,)}, the class
    # names in id order (None: one regression output), its dropout and the fine-tuning task's name/subdir
    head: Optional[Dict[str, Tensor]] = None
    labels: Optional[List[str]] = None
    head_dropout: float = 0.0
    cls_task: Dict[str, str] = field(default_factory=dict)
    memory: Dict[str, object] = field(default_factory=dict)  # our --use-memory / --mem-* options; {} = none

    def shape(self) -> Dict[str, int]:
        """Sizes read from the weights themselves (so a config can be checked against them)."""
        layers = {int(m.group(1)) for k in self.state if (m := re.match(r"attentions\.(\d+)\.", k))}
        lang = self.state.get("lang_embeddings.weight")
        ffns = sorted(k for k in self.state if re.fullmatch(r"ffns\.\d+\.lin1\.weight", k))
        dim = self.state["embeddings.weight"].size(1)
        return {
            "n_words": self.state["embeddings.weight"].size(0),
            "emb_dim": dim,
            "n_layers": len(layers),
            # memories may replace every FFN (then the authors' default size, 4 x dim)
            "ffn_dim": self.state[ffns[0]].size(0) if ffns else 4 * dim,
            "n_langs": 0 if lang is None else lang.size(0),
            "max_positions": self.state["position_embeddings.weight"].size(0),
        }


def _check_released(rel: Released, where: str, n_layers: Optional[int] = None, emb_dim: Optional[int] = None):
    """One clear error when the weights, the vocabulary and the stated hyper-parameters disagree."""
    need = ["embeddings.weight", "position_embeddings.weight"]
    for key in need + ([HF_HEAD + "proj.bias"] if rel.head is None else []):
        if key not in rel.state:
            raise ValueError(f"{where}: no parameter '{key}'; is this an XLM model with its LM head?")
    if rel.head is not None:
        rows, dim = rel.head["weight"].shape
        if dim != rel.state["embeddings.weight"].size(1) or rel.head["bias"].shape != (rows,):
            raise ValueError(f"{where}: the classifier's weight {tuple(rel.head['weight'].shape)} / bias "
                             f"{tuple(rel.head['bias'].shape)} do not fit the model's dimension "
                             f"{rel.state['embeddings.weight'].size(1)}")
        if rel.labels is not None and len(rel.labels) != rows:
            raise ValueError(f"{where}: {len(rel.labels)} class names ({', '.join(rel.labels)}) for a classifier "
                             f"of {rows} outputs")
    memories = {m.group(1) for k in rel.state if (m := re.match(r"memories\.(\d+_(?:in|after))\.", k))}
    if memories and not rel.memory:
        raise ValueError(f"{where}: memory layers {sorted(memories)} but no memory options (use_memory, mem_*)")
    for layer in {int(m.group(1)) for k in rel.state if (m := re.match(r"attentions\.(\d+)\.", k))}:
        if f"ffns.{layer}.lin1.weight" not in rel.state and f"{layer}_in" not in memories:
            raise ValueError(f"{where}: layer {layer} has neither a feed-forward block nor a memory in its place")
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
