"""Re-scoring a backlog on Spark (issue 15): a registered version's MLflow Model as a Spark UDF
(`mlflow.pyfunc.spark_udf(..., env_manager="local")`), a Parquet or CSV table in, the table `tweetguard predict`
writes out: the input columns, then per policy `<policy>_probability`, `<policy>_flagged` and `<policy>_action`.

    python -m training.release.spark_score --master 'local[4]' --model models:/tweetguard@champion \\
        --input backlog.parquet --output scored.parquet

A recipe on an existing engine, not a `tweetguard` subcommand (the CLI's names are fixed). It scores through the
MLflow Model (`training/registry/pyfunc_model.py`), i.e. through the same Predictor as `tweetguard predict`, so the
two agree (tests/test_spark.py). What MLflow 3.17 does with it (read in `mlflow.pyfunc.spark_udf`): the driver
downloads the model; in local mode every task loads it from that directory, on a cluster MLflow zips it and ships
it with `SparkContext.addFile`, so executors never reach the tracking server. `env_manager="local"`: executors run
the model in their own Python, which must have the `serve` extra (CPU torch build) and mlflow.

- Formats by suffix (`.parquet`, `.csv`), for input and output. CSV is RFC 4180 with a header, as Python's csv
  module (and `tweetguard predict`) writes it: `"` doubled inside quoted fields, fields may span lines; every
  column is read as a string. The output is Spark's: a directory of part files, refused if it exists.
- Rows whose text is null or blank are refused before scoring (counted), as `tweetguard predict` refuses them.
- Threads: Spark sets OMP_NUM_THREADS to `spark.task.cpus` (default 1) in each Python worker unless
  `spark.executorEnv.OMP_NUM_THREADS` is set, and torch (and the ONNX Runtime path, which takes torch's count)
  use it: one thread per task, as many tasks as cores.
- Partitions: at least `defaultParallelism` (the cores), so a small file keeps every core busy (`--partitions`
  sets it). Row order is not kept: join on an id column.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from serving.policies import POLICIES, output_columns
from training.data.tables import SPARK, table_format
from training.registry.pyfunc import COLUMN_TYPES

if TYPE_CHECKING:  # pyspark is the `spark` extra: imported when a session starts
    from pyspark.sql import DataFrame, SparkSession

# RFC 4180 as Python's csv module writes it (Spark's defaults escape with a backslash and stop at a newline).
CSV_OPTIONS = {"header": "true", "multiLine": "true", "quote": '"', "escape": '"'}
SCORES = "__tweetguard_scores"  # the UDF's struct column, expanded into the output columns


def result_type(policies: tuple[str, ...] = POLICIES) -> str:
    """The UDF's return type: a struct of `output_columns` with the MLflow Model's output types (DDL)."""
    return ", ".join(f"{c} {t}" for c, t in zip(output_columns(policies), COLUMN_TYPES * len(policies)))


def _format(path: str) -> str:
    """"parquet" or "csv" (training.data.tables.FORMATS: the formats Spark reads and writes here)."""
    return table_format(path, SPARK)[1:]


def session(master: str | None = None, app_name: str = "tweetguard-spark-score") -> SparkSession:
    """A SparkSession on `master` (None: spark-submit's or spark-defaults' master, else local[*]). In local mode the
    Python workers run this interpreter unless PYSPARK_PYTHON says otherwise (Spark's default is `python3` on
    PATH, which need not have the model's packages)."""
    from pyspark.sql import SparkSession

    if master is None or master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    spark = (builder.master(master) if master else builder).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def read_table(spark: SparkSession, path: str) -> DataFrame:
    reader = spark.read
    return reader.parquet(path) if _format(path) == "parquet" else reader.options(**CSV_OPTIONS).csv(path)


def write_table(df: DataFrame, path: str) -> None:
    writer = df.write.mode("errorifexists")
    if _format(path) == "parquet":
        writer.parquet(path)
    else:
        writer.options(**CSV_OPTIONS).csv(path)


def score(spark: SparkSession, model_uri: str, df: DataFrame, *, text_column: str = "text",
          partitions: int | None = None) -> DataFrame:
    """`df` with the score columns added (lazy: nothing runs until it is written). Raises on a missing text column,
    on output columns already present, and on rows whose text is null or blank."""
    import mlflow
    from pyspark.sql import functions as F

    if text_column not in df.columns:
        raise ValueError(f"no text column {text_column!r}; columns are {df.columns} (--text-column)")
    clash = [c for c in output_columns(POLICIES) if c in df.columns]
    if clash:
        raise ValueError(f"the input already has output columns {clash} (an earlier output?); drop them")
    text = F.col(text_column)
    bad = df.filter(text.isNull() | text.rlike(r"(?U)^\s*$")).count()  # (?U): blank as Python's str.isspace
    if bad:
        raise ValueError(f"{bad} rows have no usable text in column {text_column!r} (null or blank); "
                         "filter them out first")
    wanted = partitions or spark.sparkContext.defaultParallelism
    if partitions or df.rdd.getNumPartitions() < wanted:
        df = df.repartition(wanted)
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type(), env_manager="local")
    return df.withColumn(SCORES, udf(text)).select(*df.columns, f"{SCORES}.*")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.release.spark_score", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, metavar="URI",
                   help="an MLflow Model: models:/tweetguard@champion, models:/tweetguard/<version>, "
                        "runs:/<run_id>/model or a local MLflow Model directory")
    p.add_argument("--input", required=True, help="input table (.parquet or .csv: a file or Spark's directory)")
    p.add_argument("--output", required=True, help="output table (.parquet or .csv), a new directory")
    p.add_argument("--master", default=None, help="Spark master, e.g. local[4], spark://host:7077, yarn, "
                                                   "k8s://... (default: spark-submit's, else local[*])")
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument("--partitions", type=int, default=None, help="partitions to score (default: at least the "
                                                                 "cluster's cores, defaultParallelism)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    args = p.parse_args(argv)
    for path in (args.input, args.output):
        _format(path)  # a wrong suffix fails before Spark starts
    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)  # spark_udf reads the model through the global URI
    with session(args.master) as spark:
        scored = score(spark, args.model, read_table(spark, args.input), text_column=args.text_column,
                       partitions=args.partitions)
        write_table(scored, args.output)
    print(f"wrote {args.output} ({args.model})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
