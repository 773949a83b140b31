"""The benchmark's own arithmetic: FLOP counts and the profile's layer coverage."""
import json

import numpy as np
import pytest

from benchmarks.bench import SEED_MODEL, flops_per_image


def test_seed_flops_match_the_issue_reference():
    flops = flops_per_image(SEED_MODEL)
    assert flops["forward_flop"] / 1e6 == pytest.approx(13.3, abs=0.05)
    assert flops["train_flop"] / 1e6 == pytest.approx(39.9, abs=0.15)


def test_decoder_hidden_layer_flops():
    hidden = 256
    base = flops_per_image(SEED_MODEL)["forward_flop"]
    wider = flops_per_image({**SEED_MODEL, "decoder_dense_units": hidden})["forward_flop"]
    # z (2) -> hidden, and the 7x7x64 projection now reads `hidden` inputs instead of 2.
    assert wider - base == 2 * (2 * hidden + (hidden - 2) * 7 * 7 * 64)


@pytest.mark.parametrize("decoder_dense_units", [0, 32])
def test_profile_times_every_weighted_layer(decoder_dense_units):
    from benchmarks.profile_step import layer_chain
    from fashion_vae.model import build_vae

    vae = build_vae({**SEED_MODEL, "conv_filters": [8, 16], "decoder_dense_units": decoder_dense_units}, seed=0)
    chain = layer_chain(vae, np.zeros((2, 28, 28, 1), np.float32))
    profiled = {id(w) for _, layer, _ in chain for w in layer.trainable_weights}
    assert profiled == {id(w) for w in vae.trainable_weights}
    assert len({name for name, _, _ in chain}) == len(chain)


def test_sweep_rejects_a_malformed_configuration_before_training():
    from benchmarks.sweep import main

    with pytest.raises(json.JSONDecodeError):
        main(['{"train": {"epochs": 2}}', "{not json"])
