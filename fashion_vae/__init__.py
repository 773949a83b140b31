"""Library code for the Fashion-MNIST VAE pipeline.

Stage scripts in ``stages/`` stay thin: they load their section of ``params.yaml``
and call the functions here. Nothing in this package depends on DVC.
"""
import os

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX512-VNNI/BF16
# or AMX. On AVX2-only CPUs (this project's AMD EPYC) it falls back to Eigen, which trains
# the seed architecture 1.19x and the default one 1.43x slower (make bench, --onednn off).
# TensorFlow reads this once, when it loads: it must be set before anything imports it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info and warning lines
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
