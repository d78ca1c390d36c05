"""Re-scoring a backlog on Spark (issue 15): `mlflow.pyfunc.spark_udf` over the registered MLflow Model, run by
`training/release/spark_score.py`, scores real tweets as `tweetguard predict` scores them (the same file, the same
`models:/tweetguard@champion`), and each task runs torch on one thread.

Real Spark in local mode (`local[2]`, Python workers forked by Spark), real MLflow on a sqlite store, the tiny random
model, 200 tweets of the OLID test file from the shared data (skipped where the data root is missing).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.policies import POLICIES, output_columns
from training.cli import main as tweetguard
from training.tracking.versions import set_alias
from training.release import spark_score

pytestmark = pytest.mark.integration

N_TWEETS = 200
OLID_TEST = Path("olid") / "testset-levela.tsv"  # id, tweet; tab-separated, no quoting (olid/SOURCE.md)


def olid_tweets(data_root: Path, n: int) -> list[tuple[str, str]]:
    """The first `n` (id, tweet) rows of the OLID test file."""
    path = data_root / OLID_TEST
    if not path.is_file():
        pytest.skip(f"needs the shared datasets at {data_root} (TWEETGUARD_DATA_ROOT): {OLID_TEST} not found")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["id", "tweet"], rows[0]
    return [(row[0], row[1]) for row in rows[1 : n + 1]]


def test_spark_udf_scores_what_tweetguard_predict_scores(tmp_path, data_root, tiny_artifact, mlflow_uri,
                                                         register_pyfunc_dir, monkeypatch):
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)  # session() sets it: put back after the test
    tweets = olid_tweets(data_root, N_TWEETS)
    src = tmp_path / "tweets.csv"
    with src.open("w", encoding="utf-8", newline="") as f:  # RFC 4180, as both readers take it
        csv.writer(f).writerows([("id", "text"), *tweets])
    set_alias("tweetguard", "champion", register_pyfunc_dir(tiny_artifact, mlflow_uri), mlflow_uri)
    ref = "models:/tweetguard@champion"

    assert tweetguard(["predict", "--model", ref, "--input", str(src), "--output", str(tmp_path / "p.jsonl")]) == 0
    out = tmp_path / "spark.parquet"
    assert spark_score.main(["--master", "local[2]", "--model", ref, "--input", str(src), "--output", str(out)]) == 0

    expected = pd.read_json(tmp_path / "p.jsonl", lines=True, dtype=False).set_index("id")
    assert len(list(out.glob("part-*.parquet"))) == 2  # two partitions, one per core, scored as two tasks
    spark = pd.read_parquet(out)
    assert list(spark.columns) == ["id", "text", *output_columns(POLICIES)]  # the columns tweetguard predict writes
    spark = spark.set_index("id").loc[expected.index]  # row order is not kept: by id
    assert len(spark) == len(expected) == N_TWEETS
    assert spark["text"].tolist() == expected["text"].tolist() == [t for _, t in tweets]  # read alike
    # Not a vacuous comparison: on these tweets the tiny model raises flags and reaches every tier.
    assert {True, False} <= set(expected.filter(like="_flagged").to_numpy().ravel())
    assert {"none", "review", "remove"} <= set(expected.filter(like="_action").to_numpy().ravel())
    for column in output_columns(POLICIES):
        if column.endswith("_probability"):
            np.testing.assert_allclose(spark[column].to_numpy(float), expected[column].to_numpy(float), atol=1e-5,
                                       rtol=0, err_msg=column)
        else:
            assert spark[column].tolist() == expected[column].tolist(), column


def test_spark_refuses_textless_rows_and_runs_one_torch_thread_per_task(tmp_path, tiny_artifact, mlflow_uri,
                                                                        register_pyfunc_dir, monkeypatch):
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    ref = f"models:/tweetguard/{register_pyfunc_dir(tiny_artifact, mlflow_uri)}"
    with spark_score.session("local[2]") as spark:
        df = spark.createDataFrame(pd.DataFrame({"id": ["1", "2", "3", "4"],
                                                 "text": ["you are an idiot", "", " \t\u00a0", None]}))
        with pytest.raises(ValueError, match="3 rows have no usable text in column 'text'"):
            spark_score.score(spark, ref, df)
        with pytest.raises(ValueError, match="no text column 'tweet'"):
            spark_score.score(spark, ref, df, text_column="tweet")

        def threads(batches):
            import torch

            for batch in batches:
                yield pd.DataFrame({"threads": [torch.get_num_threads()] * len(batch)})

        # The Python workers that run the UDF: Spark sets OMP_NUM_THREADS=spark.task.cpus (1), torch takes it.
        seen = spark.range(4).repartition(2).mapInPandas(threads, "threads int").toPandas()["threads"]
        assert seen.tolist() == [1, 1, 1, 1]
