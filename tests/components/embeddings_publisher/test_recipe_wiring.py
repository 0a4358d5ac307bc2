"""Where a version's user-vector recipe comes from when the DAG is built: SampleGen's own
`last_n` when it made the samples, else the pipeline configuration (the recipe's CSV carries
vectors, not how they were made)."""

from __future__ import annotations

from tfx import v1 as tfx

from components.common.artifacts import Item2VecVectors
from components.sample_gen.component import SampleGen
from pipeline.configs import PipelineConfig
from pipeline.dag import ExamplesSource, create_pipeline


def publisher_properties(pipeline) -> dict:
    (publisher,) = [c for c in pipeline.components if c.id == "EmbeddingsPublisher"]
    return publisher.exec_properties


def test_the_csv_path_takes_the_configured_recipe(tmp_path):
    (tmp_path / "train.csv").write_text("")
    config = PipelineConfig(
        output_dir=str(tmp_path / "out"), user_vector_last_n=0, user_vector_half_life=3.0
    )
    properties = publisher_properties(
        create_pipeline(config, str(tmp_path / "train.csv"), None, None)
    )
    # 0: the whole history
    assert properties["user_vector_last_n"] == 0
    assert properties["user_vector_half_life"] == 3.0


def test_samplegen_s_last_n_is_the_recipe_of_what_it_built(tmp_path):
    vectors = tfx.dsl.Importer(source_uri=str(tmp_path), artifact_type=Item2VecVectors).with_id(
        "item_vectors_importer"
    )
    sample_gen = SampleGen(vectors.outputs["result"], str(tmp_path / "log.parquet"), last_n=3)
    source = ExamplesSource(
        components=[vectors, sample_gen],
        examples=sample_gen.outputs["examples"],
        catalogue=sample_gen.outputs["catalogue"],
    )
    config = PipelineConfig(output_dir=str(tmp_path / "out"), user_vector_last_n=7)
    properties = publisher_properties(create_pipeline(config, None, None, None, source=source))
    assert properties["user_vector_last_n"] == 3
    assert properties["user_vector_half_life"] is None
