"""A registered tweetguard version as an MLflow Model: `mlflow.pyfunc.load_model("models:/tweetguard@champion")`.

MLflow runs this file when it loads the model: it is logged as code ("models from code"), stored as source with a
copy of `serving/`, and nothing is pickled. It scores through `serving.predictor.Predictor`, the service's,
evaluation's and `tweetguard predict`'s inference path, so pyfunc scores are served scores. It imports `serving`,
mlflow and pandas, never `training`.

- `load_context`: `Predictor.load` of the artifact directory logged beside this file (`context.artifacts["model"]`:
  HF weights, tokenizer, `policy_card.json`), on the default inference path ("auto").
- `predict(context, model_input, params=None)`: `model_input` is a DataFrame with a string column `text` (other
  columns are ignored; a Series named `text` works too). MLflow checks it against the signature before `predict`
  runs and refuses a bare list of strings (wrap it: `pd.DataFrame({"text": texts})`); the unwrapped model
  (`unwrap_python_model().predict(None, texts)`) also takes a list. Returns one row per text with the columns of
  `tweetguard predict`, in its order (`serving.policies.output_columns`): per policy `<policy>_probability`
  (double, calibrated), `<policy>_flagged` (bool, at the flag threshold) and `<policy>_action` (none / review /
  remove, the card's tiers).
- Params (the signature's ParamSchema): one optional double per policy, `<policy>_threshold`
  (`serving.policies.threshold_param`), default null = the policy card's threshold. It moves that policy's flag for
  this call only; actions keep the card's tiers. Scalar doubles rather than one object param: `mlflow models serve`
  (`"params": {"violence_threshold": 0.3}` beside `dataframe_split`), `spark_udf(..., params=...)` and
  `mlflow.models.predict` all pass plain named scalars, and a param left out keeps its default.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from serving.policies import TEXT_COLUMN, output_columns, output_row, threshold_param


class TweetGuardModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from serving.predictor import Predictor  # torch: imported when MLflow loads the model, not at logging

        self.predictor = Predictor.load(context.artifacts["model"])

    # MLflow reads the model_input hint: from pd.DataFrame it infers no schema, so the logged signature rules.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        policies = self.predictor.policies
        thresholds = {p: float(v) for p in policies if (v := (params or {}).get(threshold_param(p))) is not None}
        results = self.predictor.predict(texts(model_input), thresholds=thresholds)
        return pd.DataFrame([output_row(r, policies) for r in results], columns=output_columns(policies))


def texts(model_input: Any) -> list[str]:
    """The texts of a DataFrame's `text` column, of a Series, or a list as it is (the Predictor refuses anything
    but a sequence of str, naming the first bad item)."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"model_input has no {TEXT_COLUMN!r} column; columns are {list(model_input.columns)}")
        return model_input[TEXT_COLUMN].tolist()
    if isinstance(model_input, pd.Series):
        return model_input.tolist()
    return model_input


mlflow.models.set_model(TweetGuardModel())
