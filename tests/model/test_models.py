"""The paper's architectures: parameter counts, shapes, regularisation, embedding, mixed precision."""

from __future__ import annotations

import numpy as np
import pytest

from genretag.core.errors import ConfigError
from genretag.families.paper_models import EMBEDDING_LAYER, EXPERIMENTS, architecture, build_model, experiment_names

# Holst 2021: trainable parameters of each experiment at its input size.
PAPER_PARAMS = {
    "exp1": 6_309_386, "exp2": 6_309_386, "exp3": 14_898_186, "exp3r": 14_898_186,
    "exp4": 3_511_434, "exp4r": 3_511_434, "exp5": 14_325_386, "exp6": 4_494_474,
    "exp7": 808_458, "exp8": 2_125_322, "exp9": 2_125_322, "exp10": 2_207_242,
}


def test_registry_holds_every_experiment_in_order():
    assert experiment_names() == list(PAPER_PARAMS)


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_parameter_count_matches_the_paper(name):
    model = build_model(name)
    expected_input = (220, 216, 3) if name == "exp10" else (128, 128, 3)
    assert tuple(model.input_shape[1:]) == expected_input
    assert model.count_params() == PAPER_PARAMS[name] == EXPERIMENTS[name].paper_params
    assert model.output_shape == (None, 10)
    assert model.get_layer(EMBEDDING_LAYER).units == 128
    assert model.name == name


def test_unknown_experiment_lists_the_valid_names():
    with pytest.raises(ConfigError) as error:
        build_model("exp99")
    assert "exp99" in str(error.value)
    for name in PAPER_PARAMS:
        assert name in str(error.value)


def test_input_shape_and_classes_are_parameters():
    model = build_model("exp8", input_shape=(64, 64, 3), n_classes=4, learning_rate=0.01)
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 4)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert model.loss == "categorical_crossentropy"
    probabilities = model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_block_differences_follow_the_spec():
    exp8 = build_model("exp8", input_shape=(64, 64, 3))
    convs = [layer for layer in exp8.layers if layer.name.startswith("conv")]
    assert len(convs) == 6
    assert all(c.kernel_size == (5, 5) and c.padding == "same" and c.filters == 128 for c in convs)
    assert {layer.rate for layer in exp8.layers if layer.name.startswith("dropout")} == {0.3}
    assert {layer.rate for layer in build_model("exp9", input_shape=(64, 64, 3)).layers if layer.name.startswith("dropout")} == {0.5}
    exp5 = build_model("exp5", input_shape=(64, 64, 3))
    assert [layer.filters for layer in exp5.layers if layer.name.startswith("conv")] == [128, 256, 512]
    exp1 = build_model("exp1", input_shape=(32, 32, 3))
    assert [layer.units for layer in exp1.layers if hasattr(layer, "units")] == [128, 128, 10]


@pytest.mark.parametrize(("plain", "regularised"), [("exp1", "exp2"), ("exp3", "exp3r"), ("exp4", "exp4r")])
def test_regularised_variants_add_l2_to_hidden_layers(plain, regularised):
    shape = (32, 32, 3)
    base, l2 = build_model(plain, input_shape=shape), build_model(regularised, input_shape=shape)
    assert base.count_params() == l2.count_params()
    hidden = [layer for layer in l2.layers if layer.name.startswith(("conv", "dense", EMBEDDING_LAYER))]
    assert hidden and all(float(layer.kernel_regularizer.l2) == pytest.approx(0.003) for layer in hidden)
    assert l2.get_layer("probabilities").kernel_regularizer is None
    assert not base.losses and len(l2.losses) == len(hidden)


def test_embedding_activations():
    from genretag.families.keras_images import keras_predict

    model = build_model("exp7", input_shape=(64, 64, 3), n_classes=3)
    images = np.random.default_rng(0).random((5, 64, 64, 3), dtype=np.float32)
    activations = keras_predict(model, images).embedding
    assert activations.shape == (5, 128) and activations.dtype == np.float32
    assert (activations >= 0).all()  # relu


def test_mixed_precision_computes_in_float16_with_float32_softmax():
    model = build_model("exp7", input_shape=(64, 64, 3), n_classes=3, mixed_precision=True)
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert model.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0).dtype == np.float32


def test_architecture_lookup():
    assert architecture("exp10").input_shape == (220, 216, 3)
    with pytest.raises(ConfigError):
        architecture("")
