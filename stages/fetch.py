"""fetch: the four official Fashion-MNIST files, verified, into data/raw/."""
from fashion_vae import dataset, params
from fashion_vae.errors import stage_main

RAW_DIR = "data/raw"


@stage_main
def main() -> None:
    cfg = params.load_section("fetch")
    written = dataset.fetch_all(cfg["sources"], RAW_DIR, cfg["timeout_s"])
    print(f"fetch: wrote {len(written)} verified files to {RAW_DIR}/")


if __name__ == "__main__":
    main()
