"""The `seed` task: lmms-eval's seedbench functions, restricted to image questions."""

from lmms_ac.plugin import builtin_task_module

_SEEDBENCH = builtin_task_module("seedbench")  # lmms-eval's own seedbench task functions, reused by seed.yaml
seed_aggregation_result = _SEEDBENCH.seed_aggregation_result
seed_doc_to_text = _SEEDBENCH.seed_doc_to_text
seed_doc_to_visual = _SEEDBENCH.seed_doc_to_visual


def image_questions(dataset):
    """Keep SEED-Bench's image questions (``data_type == 'image'``), as the law paper's SEED-IMG.

    Filtered in memory, reading only the ``data_type`` column: a ``filter`` with the cache on would
    write its indices next to the dataset's files, i.e. into a (read-only or shared) mirror."""
    return dataset.filter(
        lambda kinds: [k == "image" for k in kinds],
        input_columns="data_type",
        batched=True,
        keep_in_memory=True,
        load_from_cache_file=False,
    )


def seed_image_result(doc, result):
    pred = result[0].strip()
    pred = pred[0] if pred else pred  # the option letter, as seedbench parses it
    return {"seed_image": {"pred": pred, "answer": doc["answer"], "question_id": doc["question_id"]}}
