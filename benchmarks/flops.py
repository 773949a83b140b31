"""FLOPs per training image, counted analytically from the layer shapes.

Also the keras.io example's architecture ("seed") that the benchmarks compare against,
and issue 6's reference count for it.
"""
from __future__ import annotations

# The keras.io example's architecture ("seed"), trained at batch 128.
SEED_MODEL = {"latent_dim": 2, "conv_filters": [32, 64], "kernel_size": 3, "dense_units": 16, "decoder_dense_units": 0, "beta": 1.0}
SEED_BATCH = 128
REFERENCE_MFLOP = {"forward": 13.3, "train": 39.9}  # issue 6, seed architecture


def flops_per_image(model_params: dict, side: int = 28) -> dict:
    """Analytic forward MACs per layer of the project's VAE; FLOPs = 2 * MACs.

    Convolutions count every kernel tap (padding included), a transposed conv
    in_h * in_w * k * k * c_in * c_out. Training is taken as 3x the forward pass
    (forward + gradients w.r.t. inputs and weights).
    """
    k, filters = model_params["kernel_size"], list(model_params["conv_filters"])
    dense, latent = model_params["dense_units"], model_params["latent_dim"]
    macs: dict[str, int] = {}
    s, c = side, 1
    for i, f in enumerate(filters):
        out = -(-s // 2)
        macs[f"encoder.conv{i}"] = out * out * k * k * c * f
        s, c = out, f
    macs["encoder.hidden"] = s * s * c * dense
    macs["encoder.heads"] = 2 * dense * latent
    rev = filters[::-1]
    s = side // 2 ** len(filters)
    hidden = model_params.get("decoder_dense_units", 0)
    if hidden:
        macs["decoder.hidden"] = latent * hidden
    macs["decoder.project"] = (hidden or latent) * s * s * rev[0]
    c = rev[0]
    for i, f in enumerate(rev):
        macs[f"decoder.deconv{i}"] = s * s * k * k * c * f
        s, c = 2 * s, f
    macs["decoder.logits"] = s * s * k * k * c * 1
    forward = 2 * sum(macs.values())
    return {
        "forward_flop": forward,
        "train_flop": 3 * forward,
        "forward_mflop_by_layer": {name: round(2 * m / 1e6, 4) for name, m in macs.items()},
    }
