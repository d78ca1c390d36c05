"""`tweetguard sample`: choose which texts are worth a label.

    tweetguard sample [--model REF] --input FILE [--text-column text] --n N
        --strategy uncertainty|disagreement|stratified|random --output FILE [--seed 0]
        [--challenger REF] [--feedback-db URL]

The input is a .csv/.tsv/.jsonl of texts, or the service's score log written with TWEETGUARD_LOG_TEXTS (its
`text` field); formats and bad-row reports as in `tweetguard predict`. Every text is scored by the model
(default the champion) through the Predictor. Strategies:
- `uncertainty`: closest to a policy's flag threshold first (min over policies of |p − threshold|);
- `disagreement`: where the model and `--challenger` (a challenger, or the distilled fast tier) differ most
  (max over policies of |p_a − p_b|);
- `stratified`: per policy, equal shares of the n over five score bands (0-.2, .2-.4, ...), drawn at random
  within each; each row carries its stratum and its sampling weight (stratum size / rows drawn from it), so a
  labelled sample estimates precision at any threshold or tier without bias;
- `random`: uniform, weight N / n: the baseline every strategy is compared with.
Deterministic for a seed. Exact and near repeats (the project's near-duplicate rule on text keys) are sampled
once, and a text already labelled in the feedback store (`--feedback-db`: same text key as a stored verdict's
text, or same sha256 as a verdict's decision) is never sampled. Output: the input columns plus
`<policy>_probability`, `sample_rank`, `sample_strategy`, `sample_score` (the strategy's key), `sample_stratum` and
`sample_weight`.
"""

from __future__ import annotations

from pathlib import Path

from serving.policies import POLICIES
from training.data.sampling import Sampled, labelled_keys, sample
from training.release.predict import read_input, table_delimiter, table_texts, write_table


# The columns of a sample that travel with its texts through labelling (training.release.label): how each text was
# chosen, and the sampling weight that lets a labelled stratified sample estimate precision without bias.
SAMPLE_FIELDS = ("sample_strategy", "sample_stratum", "sample_weight")


def sample_file(predictor, input_path: str | Path, output_path: str | Path, *, n: int, strategy: str,
                text_column: str = "text", seed: int = 0, challenger=None, feedback_db: str | None = None) -> Sampled:
    """Read, score, sample and write (atomically); see the module."""
    input_path, output_path = Path(input_path), Path(output_path)
    out_format = table_delimiter(output_path)
    table = read_input(input_path)
    texts = table_texts(table, text_column, input_path)  # any bad row fails, naming its line
    probs = predictor.predict_proba(texts)
    other = None if challenger is None else challenger.predict_proba(texts)
    result = sample(texts, probs, predictor.card.thresholds, n=n, strategy=strategy, seed=seed, other=other,
                    labelled=labelled_keys(feedback_db))
    extra = [f"{p}_probability" for p in POLICIES] + ["sample_rank", "sample_strategy", "sample_score",
                                                      "sample_stratum", "sample_weight"]
    rows = []
    for rank, c in enumerate(result.rows, 1):
        row = dict(table.rows[c["index"]])
        row.update({f"{p}_probability": float(probs[c["index"], j]) for j, p in enumerate(POLICIES)})
        row.update(sample_rank=rank, sample_strategy=strategy, sample_score=c["score"],
                   sample_stratum=c["stratum"], sample_weight=c["weight"])
        rows.append(row)
    write_table(output_path, out_format, table.columns + [c for c in extra if c not in table.columns], iter(rows))
    return result
