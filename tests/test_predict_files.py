"""python -m encoder.predict on a user's own files: csv, tsv, jsonl and parquet tables with a text column of
any name, their other columns kept, JSON lines or csv out; mistakes in one line."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, compose

REVIEWS = [("r1", "a gorgeous, witty, seductive movie", 5), ("r2", "dull and lifeless", 1), ("r3", "", 3),
           ("r4", "a joy to watch, from the first scene to the last", 4)]


@pytest.fixture(scope="module")
def model(tmp_path_factory, rt_files):
    import train

    out = tmp_path_factory.mktemp("model")
    train.train(compose(TINY, out))
    return out / "checkpoints" / "last.ckpt"


def predict(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "encoder.predict", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def write_table(path):
    rows = [{"id": i, "review": t, "stars": s} for i, t, s in REVIEWS]
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "review", "stars"], delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_a_table_is_predicted_with_its_columns_kept(model, tmp_path, suffix):
    import encoder

    table = write_table(tmp_path / f"reviews{suffix}")
    done = predict(model, "--file", table, "--text-column", "review")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    expected = encoder.load_model(model).predict([t for _, t, _ in REVIEWS])
    assert [r["id"] for r in rows] == [i for i, _, _ in REVIEWS]
    assert [str(r["stars"]) for r in rows] == [str(s) for _, _, s in REVIEWS]  # csv reads strings, others numbers
    for row, want in zip(rows, expected):
        assert row["label"] == want["label"] and row["probs"] == pytest.approx(want["probs"], abs=1e-6)


def test_csv_out_spreads_probabilities_into_columns_and_never_overwrites(model, tmp_path):
    table = write_table(tmp_path / "reviews.csv")
    out = tmp_path / "predicted.csv"
    assert predict(model, "--file", table, "--text-column", "review", "--output", out).returncode == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert list(rows[0]) == ["id", "review", "stars", "label", "score", "probs.rotten", "probs.fresh"]
    assert all(abs(float(r["probs.rotten"]) + float(r["probs.fresh"]) - 1) < 1e-5 for r in rows)
    again = predict(model, "--file", table, "--text-column", "review", "--output", out)
    assert again.returncode == 2 and "exists; choose a new file" in again.stderr


def test_a_column_named_like_a_prediction_field_is_kept(model, tmp_path):
    table = tmp_path / "gold.csv"
    table.write_text("text,label\ngreat,fresh\nawful,rotten\n", encoding="utf-8")
    rows = [json.loads(line) for line in predict(model, "--file", table).stdout.splitlines()]
    assert [r["label"] for r in rows] == ["fresh", "rotten"]  # the gold label, as written
    assert all(r["predicted_label"] in ("rotten", "fresh") for r in rows)


def test_csv_out_keeps_every_key_of_a_jsonl_whose_lines_differ(model, tmp_path):
    table = tmp_path / "mixed.jsonl"
    table.write_text('{"text": "great", "id": 1}\n{"text": "awful", "source": "web", "meta": {"lang": "en"}}\n',
                     encoding="utf-8")
    out = tmp_path / "predicted.csv"
    done = predict(model, "--file", table, "--output", out)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert list(rows[0])[:4] == ["text", "id", "source", "meta.lang"]
    assert [(r["id"], r["source"], r["meta.lang"]) for r in rows] == [("1", "", ""), ("", "web", "en")]


@pytest.mark.parametrize("name, content, args, message", [
    ("t.csv", "id,review\n1,good\n", ["--text-column", "text"],
     "has no column 'text' (--text-column); its columns are ['id', 'review']"),
    ("t.csv", "text,text\na,b\n", [], "names the column 'text' twice in its header"),
    # a row with a cell too many or too few would shift or lose cells
    ("t.csv", "text,id\ngood,1\nbad,2,extra\n", [], "t.csv: line 3 has 3 cells where the header has 2"),
    ("t.tsv", "text\tid\ngood\t1\nbad\n", [], "t.tsv: line 3 has 1 cells where the header has 2"),
    # a line without the text (or null) is no empty text
    ("t.jsonl", '{"text": "good"}\n{"review": "bad"}\n', [], "t.jsonl: row 2 has no 'text' (--text-column)"),
    ("t.jsonl", '{"text": "good"}\n{"text": null}\n', [], "t.jsonl: row 2 has no 'text' (--text-column)"),
    ("t.csv", "text,id\n", [], "t.csv holds no texts (it is empty, blank or a header without rows)"),
    ("t.txt", "\n  \n", [], "t.txt holds no texts"),
    ("t.csv", "text\ngood\n", ["--output", "no/such/folder/out.jsonl"], "the folder no/such/folder does not exist"),
    ("t.csv", "text\ngood\n", ["--output", "v.npy"], "--output v.npy holds vectors: add --embed"),
])
def test_table_mistakes_are_one_line(model, tmp_path, name, content, args, message):
    table = tmp_path / name
    table.write_text(content, encoding="utf-8")
    done = predict(model, "--file", table, *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert message in done.stderr


def test_embeddings_go_to_a_npy_file_in_input_order(model, tmp_path):
    """--embed --output X.npy: what vector stores and numpy read, one float32 row per text, in the file's order."""
    import numpy as np

    import encoder

    table = write_table(tmp_path / "reviews.csv")
    done = predict(model, "--file", table, "--text-column", "review", "--embed", "--output", tmp_path / "v.npy")
    assert done.returncode == 0, done.stderr
    vectors = np.load(tmp_path / "v.npy")
    expected = encoder.load_model(model).embed([t for _, t, _ in REVIEWS]).numpy()
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert np.allclose(vectors, expected, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv", "v.npy"]  # (no partial file left)
    again = predict(model, "--file", table, "--text-column", "review", "--embed", "--output", tmp_path / "v.npy")
    assert again.returncode == 2 and "exists; choose a new file" in again.stderr
