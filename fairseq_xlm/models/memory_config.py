"""Options of product-key memory layers (the authors' ``--use_memory`` / ``--mem_*``) and their checks.

Every authors' option maps 1:1 onto a fairseq model option: ``--mem_knn 32`` is ``--mem-knn 32``. The
authors' booleans that default to true become fairseq's ``--mem-no-*`` switches (``--mem_keys_learn false``
is ``--mem-no-keys-learn``), because fairseq turns a true-by-default dataclass bool into a ``store_false``
flag; the defaults are the authors'. ``memory_spec(cfg)`` checks a config once (every authors' assert, as one
clear error naming the flag) and returns the derived sizes the layer needs.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from fairseq.dataclass import ChoiceEnum, FairseqDataclass


IMPLEMENTATIONS = ChoiceEnum(["pq_fast", "pq_default", "flat"])
KEY_TYPES = ChoiceEnum(["uniform", "gaussian", "binary"])


@dataclass
class MemoryConfig(FairseqDataclass):
    """The authors' memory options (``xlm/model/memory/memory.py``'s ``register_args``), fairseq-named."""

    use_memory: bool = field(default=False, metadata={"help": "add product-key memory layers (--use_memory)"})
    mem_enc_positions: str = field(default="", metadata={
        "help": "encoder layers with a memory, e.g. '4,7' or '4+': 'N' replaces layer N's feed-forward block, "
                "'N+' adds a memory after it (after its LayerNorm); layers count from 0"})
    mem_dec_positions: str = field(default="", metadata={"help": "decoder layers with a memory (as above)"})
    mem_implementation: IMPLEMENTATIONS = field(default="pq_fast", metadata={
        "help": "product keys (pq_fast; pq_default is the same function, the authors computed it with faiss) "
                "or one flat key table (flat)"})
    mem_grouped_conv: bool = field(default=False, metadata={
        "help": "one grouped linear layer for the per-head query networks (needs --mem-multi-query-net)"})
    mem_sparse: bool = field(default=False, metadata={
        "help": "sparse gradients for the values (EmbeddingBag sparse=True; train with --optimizer xlm_pkm_adam)"})
    mem_input2d: bool = field(default=False, metadata={"help": "convolutional query network (images only: refused)"})
    mem_k_dim: int = field(default=256, metadata={"help": "key dimension (split in two halves for product keys)"})
    mem_v_dim: int = field(default=-1, metadata={"help": "value dimension; -1 = the model dimension"})
    mem_heads: int = field(default=4, metadata={"help": "memory reading heads (their reads are summed)"})
    mem_knn: int = field(default=32, metadata={"help": "slots read per head: the k nearest keys to the query"})
    mem_share_values: bool = field(default=False, metadata={
        "help": "one value table for every memory of the model (encoder and decoder)"})
    mem_shuffle_indices: bool = field(default=False, metadata={
        "help": "a fixed random permutation of the slot indices per head"})
    mem_shuffle_query: bool = field(default=False, metadata={
        "help": "permute the input dimensions per head (no query network, several heads)"})
    mem_modulo_size: int = field(default=-1, metadata={
        "help": "effective memory size: slot indices modulo this; -1 = off"})
    mem_keys_type: KEY_TYPES = field(default="uniform", metadata={
        "help": "key initialisation"})
    mem_n_keys: int = field(default=512, metadata={
        "help": "keys per half (product keys: n_keys**2 slots) or slots (flat)"})
    mem_keys_normalized_init: bool = field(default=False, metadata={"help": "unit-norm keys at initialisation"})
    mem_no_keys_learn: bool = field(default=False, metadata={"help": "fixed keys (the authors' --mem_keys_learn false)"})
    mem_no_use_different_keys: bool = field(default=False, metadata={
        "help": "one key table for every head and both halves (the authors' --mem_use_different_keys false)"})
    mem_query_detach_input: bool = field(default=False, metadata={"help": "no gradient from the memory to its input"})
    mem_query_layer_sizes: str = field(default="0,0", metadata={
        "help": "query network sizes, 0 = input / output ('0,0' one linear layer, '0,512,0' two, '' none)"})
    mem_query_kernel_sizes: str = field(default="", metadata={"help": "convolution kernels (images only: refused)"})
    mem_no_query_bias: bool = field(default=False, metadata={
        "help": "query network without biases (the authors' --mem_query_bias false)"})
    mem_query_batchnorm: bool = field(default=False, metadata={"help": "BatchNorm after each query layer"})
    mem_no_query_net_learn: bool = field(default=False, metadata={
        "help": "fixed query network (the authors' --mem_query_net_learn false)"})
    mem_query_residual: bool = field(default=False, metadata={"help": "residual query convolutions (images only)"})
    mem_multi_query_net: bool = field(default=False, metadata={"help": "one query network per head and half"})
    mem_value_zero_init: bool = field(default=False, metadata={"help": "values start at zero"})
    mem_normalize_query: bool = field(default=False, metadata={"help": "unit-norm queries (each half)"})
    mem_temperature: float = field(default=1.0, metadata={"help": "divide the scores by this"})
    mem_no_score_softmax: bool = field(default=False, metadata={
        "help": "no softmax over the k scores (the authors' --mem_score_softmax false)"})
    mem_score_subtract: str = field(default="", metadata={
        "help": "subtract the k scores' min, mean or median ('' = nothing)"})
    mem_score_normalize: bool = field(default=False, metadata={"help": "L1-normalise the k scores"})
    mem_input_dropout: float = field(default=0.0, metadata={"help": "dropout on the memory's input"})
    mem_query_dropout: float = field(default=0.0, metadata={"help": "dropout on the queries"})
    mem_value_dropout: float = field(default=0.0, metadata={"help": "dropout on the memory's output"})


# authors' params name -> (our field, inverted): the converter's and the docs' mapping
AUTHORS_NAMES = {f"mem_{name}": (f"mem_no_{name}", True) for name in
                 ("keys_learn", "use_different_keys", "query_bias", "query_net_learn", "score_softmax")}


@dataclass
class MemorySpec:
    """A checked memory configuration with the authors' derived sizes."""

    product: bool  # product keys (pq_*) or one flat table
    n_keys: int
    n_indices: int  # slots the keys address: n_keys**2 (product) or n_keys
    size: int  # value rows: n_indices, or --mem-modulo-size
    k_dim: int
    heads: int
    knn: int
    query_sizes: Optional[List[int]]  # None: no query network; else [input, ..., output]
    cfg: object  # the config itself (flags read as they are)


def parse_positions(value: str, n_layers: int, flag: str) -> List[Tuple[int, str]]:
    """'4,7+' -> [(4, 'in'), (7, 'after')]: 'N' replaces layer N's FFN, 'N+' follows it."""
    items = [x for x in (value or "").split(",") if x != ""]
    out = []
    for item in items:
        layer = item[:-1] if item.endswith("+") else item
        if not layer.isdigit() or not 0 <= int(layer) < n_layers:
            raise ValueError(f"{flag} {value!r}: {item!r} is not a layer number 0..{n_layers - 1} "
                             f"(optionally followed by '+')")
        out.append((int(layer), "after" if item.endswith("+") else "in"))
    if len(set(out)) != len(out):
        raise ValueError(f"{flag} {value!r}: a position is given twice")
    return out


def _fail(flag: str, why: str):
    raise ValueError(f"{flag}: {why}")


def memory_spec(cfg, dim: int) -> MemorySpec:
    """Check the memory options of ``cfg`` for a model of width ``dim`` (the authors' check_params)."""
    product = cfg.mem_implementation != "flat"
    for flag in ("mem_input2d", "mem_query_residual"):
        if getattr(cfg, flag):
            _fail("--" + flag.replace("_", "-"), "convolutional query networks are for images, not text")
    if cfg.mem_query_kernel_sizes:
        _fail("--mem-query-kernel-sizes", "convolutional query networks are for images, not text")
    if cfg.mem_grouped_conv and not cfg.mem_multi_query_net:
        _fail("--mem-grouped-conv", "needs --mem-multi-query-net")
    if cfg.mem_k_dim < 2 or (product and cfg.mem_k_dim % 2):
        _fail("--mem-k-dim", f"{cfg.mem_k_dim}: at least 2, and even for product keys")
    if cfg.mem_v_dim not in (-1, dim):
        _fail("--mem-v-dim", f"{cfg.mem_v_dim}: the memory's output is added to the model's states, so it "
                             f"must be -1 or the model dimension {dim}")
    if cfg.mem_heads < 1 or cfg.mem_knn < 1 or cfg.mem_n_keys < 1:
        _fail("--mem-heads/--mem-knn/--mem-n-keys", "must be positive")
    if cfg.mem_keys_type == "binary":
        if cfg.mem_keys_normalized_init:
            _fail("--mem-keys-normalized-init", "binary keys are not normalised")
        bits = cfg.mem_k_dim // 2 if product else cfg.mem_k_dim
        if 1 << bits != cfg.mem_n_keys:
            _fail("--mem-n-keys", f"binary keys of {bits} bits need --mem-n-keys {1 << bits}")
    n_indices = cfg.mem_n_keys ** 2 if product else cfg.mem_n_keys
    if cfg.mem_knn > cfg.mem_n_keys:
        _fail("--mem-knn", f"{cfg.mem_knn} nearest keys among {cfg.mem_n_keys}")
    size = n_indices
    if cfg.mem_modulo_size != -1:
        if not 1 <= cfg.mem_modulo_size < n_indices:
            _fail("--mem-modulo-size", f"{cfg.mem_modulo_size}: -1 or 1..{n_indices - 1}")
        size = cfg.mem_modulo_size
    different_keys = not cfg.mem_no_use_different_keys
    if different_keys and cfg.mem_keys_type == "binary":
        _fail("--mem-keys-type binary", "one key table only: add --mem-no-use-different-keys")
    if different_keys and not product and cfg.mem_heads < 2:
        _fail("--mem-implementation flat", "different keys need --mem-heads >= 2 (or --mem-no-use-different-keys)")
    if cfg.mem_multi_query_net and not product and cfg.mem_heads < 2:
        _fail("--mem-multi-query-net", "needs product keys or --mem-heads >= 2")
    if cfg.mem_multi_query_net and cfg.mem_query_layer_sizes in ("", "0,0"):
        _fail("--mem-multi-query-net", "needs a query network with a hidden layer (--mem-query-layer-sizes 0,N,0)")
    if cfg.mem_shuffle_query and not (cfg.mem_heads > 1 and cfg.mem_query_layer_sizes == ""):
        _fail("--mem-shuffle-query", "needs --mem-heads > 1 and no query network (--mem-query-layer-sizes '')")
    if cfg.mem_shuffle_query and dim % (2 ** cfg.mem_heads):
        _fail("--mem-shuffle-query", f"the model dimension {dim} must be divisible by 2**heads")
    query_sizes = None
    if cfg.mem_query_layer_sizes == "":
        if cfg.mem_heads > 1 and not different_keys and not cfg.mem_shuffle_query:
            _fail("--mem-query-layer-sizes ''", "several heads without a query network need different keys "
                                                "or --mem-shuffle-query")
        if cfg.mem_k_dim != dim:
            _fail("--mem-query-layer-sizes ''", f"without a query network --mem-k-dim must be {dim}")
    else:
        try:
            sizes = [int(x) for x in cfg.mem_query_layer_sizes.split(",") if x != ""]
        except ValueError:
            sizes = []
        if len(sizes) < 2 or sizes[0] != 0 or sizes[-1] != 0:
            _fail("--mem-query-layer-sizes", f"{cfg.mem_query_layer_sizes!r}: '0,0', '0,N,...,0' or ''")
        sizes[0] = dim
        sizes[-1] = cfg.mem_k_dim // 2 if cfg.mem_multi_query_net else cfg.mem_heads * cfg.mem_k_dim
        query_sizes = sizes
    if cfg.mem_score_subtract not in ("", "min", "mean", "median"):
        _fail("--mem-score-subtract", f"{cfg.mem_score_subtract!r}: '', min, mean or median")
    if cfg.mem_score_subtract and cfg.mem_knn < 2:
        _fail("--mem-score-subtract", "needs --mem-knn >= 2")
    if cfg.mem_score_normalize and not cfg.mem_no_score_softmax and cfg.mem_score_subtract == "":
        _fail("--mem-score-normalize", "softmax scores are already normalised: add --mem-score-subtract or "
                                       "--mem-no-score-softmax")
    for name in ("mem_input_dropout", "mem_query_dropout", "mem_value_dropout"):
        if not 0 <= getattr(cfg, name) < 1:
            _fail("--" + name.replace("_", "-"), "must be in [0, 1)")
    return MemorySpec(product=product, n_keys=cfg.mem_n_keys, n_indices=n_indices, size=size, k_dim=cfg.mem_k_dim,
                      heads=cfg.mem_heads, knn=cfg.mem_knn, query_sizes=query_sizes, cfg=cfg)


_POSITION_FIELDS = ("use_memory", "mem_enc_positions", "mem_dec_positions")


def _positions_text(value) -> str:
    """The authors' checked positions [(4, 'in'), (7, 'after')] (or their raw '4,7+') -> '4,7+'."""
    if isinstance(value, str):
        return value
    return ",".join(f"{layer}{'+' if where == 'after' else ''}" for layer, where in value)


def from_authors_params(params: dict, where: str) -> dict:
    """Our memory options from the authors' saved ``params`` ({} without ``use_memory``)."""
    if not params.get("use_memory"):
        return {}
    defaults = MemoryConfig()
    out = {"use_memory": True, "mem_enc_positions": _positions_text(params.get("mem_enc_positions", "")),
           "mem_dec_positions": _positions_text(params.get("mem_dec_positions", ""))}
    for name in MemoryConfig.__dataclass_fields__:
        if name in _POSITION_FIELDS or name == "_name":
            continue
        if name.startswith("mem_no_"):
            out[name] = not bool(params.get("mem_" + name[len("mem_no_"):], True))
            continue
        value = params.get(name, getattr(defaults, name))
        if name in ("mem_query_layer_sizes", "mem_query_kernel_sizes") and not isinstance(value, str):
            value = ",".join(str(v) for v in value)
        out[name] = value.value if hasattr(value, "value") else value
    if out["mem_query_kernel_sizes"] or out["mem_input2d"]:
        raise ValueError(f"{where}: a convolutional (image) memory query network; only text models convert")
    return out


def to_authors_params(memory: dict, n_layers: int) -> dict:
    """The authors' ``params`` memory entries (as their check_params leaves them) for our options."""
    if not memory.get("use_memory"):
        return {"use_memory": False}
    cfg = MemoryConfig(**{k: v for k, v in memory.items() if k in MemoryConfig.__dataclass_fields__})
    product = cfg.mem_implementation != "flat"
    n_indices = cfg.mem_n_keys ** 2 if product else cfg.mem_n_keys
    out = {"use_memory": True, "mem_product_quantization": product, "n_indices": n_indices,
           "mem_size": n_indices if cfg.mem_modulo_size == -1 else cfg.mem_modulo_size,
           "mem_values_optimizer": "adam,lr=0.001"}
    for name in MemoryConfig.__dataclass_fields__:
        if name == "_name" or name == "use_memory":
            continue
        value = getattr(cfg, name)
        if name.startswith("mem_no_"):
            out["mem_" + name[len("mem_no_"):]] = not value
        elif name in ("mem_enc_positions", "mem_dec_positions"):
            out[name] = parse_positions(value, n_layers, "--" + name.replace("_", "-"))
        elif name == "mem_query_layer_sizes":
            out[name] = [int(x) for x in value.split(",") if x != ""]
        elif name == "mem_query_kernel_sizes":
            out[name] = ""
        else:
            out[name] = value.value if hasattr(value, "value") else value
    return out
