"""Cross-lingual retrieval (fairseq_xlm.retrieval, python -m fairseq_xlm.cli.evaluate_retrieval).

Oracles: hand-made cases whose P@1 is known exactly (identical sides with language embeddings zeroed: 1; a
permuted side: the permutation's fixed points / N), and a numpy cosine nearest neighbour over embeddings
computed one unpadded sentence at a time.
"""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from fairseq.data import data_utils, indexed_dataset

from fairseq_xlm import retrieval
from fairseq_xlm.cli import evaluate_retrieval as cli
from fairseq_xlm.data import layout
from test_convert import native_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_side(prefix, sentences, vocab_size):
    builder = indexed_dataset.make_builder(f"{prefix}.bin", impl="mmap", vocab_size=vocab_size)
    for s in sentences:
        builder.add_item(s)
    builder.finalize(f"{prefix}.idx")


@pytest.fixture(scope="module")
def bible_model(bible_databin, tmp_path_factory):
    """(checkpoint, model): a random xlm_tiny (weights perturbed) of the en/es Bible data-bin."""
    ckpt, _, model = native_checkpoint(tmp_path_factory.mktemp("retrieval"), data=bible_databin)
    return ckpt, model


def identical_sides_databin(bible_databin, tmp_path, permutation=None):
    """DATA whose test.en-es pairs are the Bible data-bin's distinct English test sentences on both sides
    (the es side permuted by ``permutation`` if given)."""
    dictionary = layout.load_dictionary(str(bible_databin))
    english = data_utils.load_indexed_dataset(str(bible_databin / "test.en-es.en"), dictionary)
    seen, sentences = set(), []
    for i in range(len(english)):
        if tuple(english[i].tolist()) not in seen:
            seen.add(tuple(english[i].tolist()))
            sentences.append(english[i])
    data = tmp_path / "data"
    data.mkdir(parents=True)
    shutil.copy(bible_databin / "dict.txt", data / "dict.txt")
    write_side(data / "test.en-es.en", sentences, len(dictionary))
    other = sentences if permutation is None else [sentences[j] for j in permutation(len(sentences))]
    write_side(data / "test.en-es.es", other, len(dictionary))
    return data, len(sentences)


def without_language_embeddings(ckpt, out):
    """A copy of ``ckpt`` whose language embeddings are zero: identical text then embeds identically."""
    state = torch.load(ckpt, weights_only=False)
    state["model"]["encoder.embeddings.embed_langs.weight"].zero_()
    torch.save(state, out)
    return out


def test_identical_sides_retrieve_perfectly_and_a_permutation_only_its_fixed_points(bible_model, bible_databin,
                                                                                   tmp_path):
    ckpt = without_language_embeddings(bible_model[0], tmp_path / "nolang.pt")
    data, n = identical_sides_databin(bible_databin, tmp_path / "same")
    assert n >= 50
    result = retrieval.evaluate_retrieval(str(ckpt), str(data), "en", "es")
    assert result == {"src": "en", "tgt": "es", "n": n, "p_at_1_src_tgt": 1.0, "p_at_1_tgt_src": 1.0}

    # five sentences stay in place, the others are shuffled: exactly the fixed points are found
    perm = np.concatenate([np.arange(5), 5 + np.random.default_rng(3).permutation(n - 5)])
    data, _ = identical_sides_databin(bible_databin, tmp_path / "perm", permutation=lambda _: perm)
    result = retrieval.evaluate_retrieval(str(ckpt), str(data), "en", "es", layer=1)
    fixed = int(np.sum(perm == np.arange(n)))
    assert result["p_at_1_src_tgt"] == result["p_at_1_tgt_src"] == fixed / n
    assert 5 <= fixed < 10  # near chance (1/n per sentence), not near 1
    assert retrieval.evaluate_retrieval(str(ckpt), str(data), "en", "es", max_sentences=5)["p_at_1_src_tgt"] == 1.0


def one_by_one(model, dataset, lang_id, layer):
    """Embeddings computed one unpadded sentence at a time, mean of layer ``layer`` in numpy."""
    rows = []
    with torch.no_grad():
        for i in range(len(dataset)):
            tokens = torch.cat([torch.tensor([2]), dataset[i].long()])[None]
            _, extra = model.encoder.extract_features(tokens, langs=torch.full_like(tokens, lang_id),
                                                      return_all_hiddens=True)
            rows.append(extra["inner_states"][layer][0].numpy().mean(0))
    return np.stack(rows)


def numpy_p_at_1(a, b):
    """Cosine nearest neighbour written out: for each row of a, the row of b with the largest cosine."""
    hits = 0
    for i, x in enumerate(a):
        cos = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for y in b]
        hits += int(np.argmax(cos) == i)
    return hits / len(a)


@pytest.mark.parametrize("layer", [-1, 1])
def test_matches_a_numpy_cosine_nearest_neighbour_on_real_pairs(bible_model, bible_databin, layer):
    ckpt, model = bible_model
    dictionary = model.encoder.dictionary
    sides = [data_utils.load_indexed_dataset(str(bible_databin / f"test.en-es.{lang}"), dictionary)
             for lang in ("en", "es")]
    expected = [one_by_one(model, side, lang_id, layer) for lang_id, side in enumerate(sides)]
    got = [retrieval.embed_dataset(model, dictionary, side, lang_id, layer, max_tokens=300).numpy()
           for lang_id, side in enumerate(sides)]  # small batches: several widths of padding
    for e, g in zip(expected, got):
        assert np.abs(e - g).max() < 1e-4
    result = retrieval.evaluate_retrieval(str(ckpt), str(bible_databin), "en", "es", layer=layer)
    assert result["n"] == len(sides[0]) == 60
    assert result["p_at_1_src_tgt"] == numpy_p_at_1(*expected)
    assert result["p_at_1_tgt_src"] == numpy_p_at_1(expected[1], expected[0])
    reverse = retrieval.evaluate_retrieval(str(ckpt), str(bible_databin), "es", "en", layer=layer)
    assert reverse["p_at_1_src_tgt"] == result["p_at_1_tgt_src"]


def test_cli_row_json_and_bad_input(bible_model, bible_databin, capsys):
    ckpt, _ = bible_model
    common = ["--checkpoint", str(ckpt), "--data", str(bible_databin), "--src", "en", "--tgt", "es"]
    result = cli.main(common + ["--json", "--max-sentences", "20"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == {**result, "split": "test", "layer": -1} and result["n"] == 20
    cli.main(common + ["--header", "--name", "tiny", "--max-sentences", "20"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| model | layer | pairs | en→es P@1 (%) | es→en P@1 (%) |"
    assert lines[2] == (f"| tiny | -1 | 20 | {100 * result['p_at_1_src_tgt']:.1f} | "
                        f"{100 * result['p_at_1_tgt_src']:.1f} |")
    for argv, message in [(["--src", "ny"], "--src ny: .* knows the languages en,es"),
                          (["--split", "valid2"], "no parallel split valid2.en-es"),
                          (["--layer", "3"], "--layer 3: the encoder has layers 0 .embeddings. to 2"),
                          (["--max-sentences", "-1"], "--max-sentences -1")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(common + argv)
        assert exit_info.value.code == 1
        err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(err) == 1, err
        assert re.search(message, err[0]), err[0]
    with pytest.raises(ValueError, match="empty list of batches"):
        retrieval.embed(bible_model[1], bible_model[1].encoder.dictionary, [], 0)
