"""Publishing a run on the Hub: its cards (:mod:`.cards`: the model card of the adapter, the dataset card of the
generated pool) and the staging and upload (:mod:`.upload`); their public names are importable from here.
"""

from opensir_lite.hub.cards import (  # noqa: F401
    ADAPTER_FILES,
    BENCHMARK_TITLES,
    CARD_MODEL_KEYS,
    CARD_TAGS,
    CARD_TRAINING_KEYS,
    CITATION_LINES,
    EMBEDDED_HUB_ID,
    OPENSIR_BIBTEX,
    POOL_DATA_FILE,
    POOL_FIELDS,
    REWARD_COLUMNS,
    PublishError,
    RunInfo,
    base_model_license,
    dataset_card,
    eval_result_entries,
    find_eval_results,
    hub_base_model,
    model_card,
    model_card_body,
    model_card_data,
    pool_rows,
    read_json,
    read_run,
    size_category,
)
from opensir_lite.hub.upload import (  # noqa: F401
    PLOTS_DIRNAME,
    TOKENIZER_FILES,
    default_pool_repo_id,
    export_adapter,
    push_run,
    stage_model,
    stage_pool_dataset,
    stage_run,
    validate_repo_id,
)
