"""Task: predict every row of a data file with a registered version; the rows plus predictions go to one file.

Tagged ``gpu-train`` like training: it holds a GPU, so the same tag limit counts it (infra/setup_prefect.py).
"""

from prefect import get_run_logger

from tasks import artifacts
from tasks.policy import stage
from tasks.train import GPU_TAG
from tuneline.results import Prediction
from tuneline.stages.predict import predict_file


@stage("predict")
def predict(ref: str, data: str, out: str, batch_size: int, storage_root: str, text_column: str | None = None,
            text_pair_column: str | None = None, max_new_tokens: int | None = None) -> Prediction:
    logger = get_run_logger()
    progress = artifacts.PredictionProgress(f"Predicting {data} with {ref}", logger.info)
    result = predict_file(ref, data, out, batch_size=batch_size, storage_root=storage_root, text_column=text_column,
                          text_pair_column=text_pair_column, max_new_tokens=max_new_tokens, progress=progress)
    logger.info("%s:%s predicted %d rows in %.1fs (%.1f rows/s on %s) -> %s (version recorded in %s)", result.model,
                result.version, result.rows, result.predict_seconds, result.rows_per_second, result.device,
                result.output, result.metadata)
    artifacts.prediction(result.model_dump())
    return result


predict = predict.with_options(tags={GPU_TAG})
