"""prepare: raw IDX files -> normalised float32 train/val/test .npz in data/prepared/."""
from pathlib import Path

from fashion_vae import dataset, params, prepared
from fashion_vae.errors import stage_main

RAW_DIR = "data/raw"
OUT_DIR = Path("data/prepared")


@stage_main
def main() -> None:
    cfg = params.load_section("prepare")
    raw = {key: dataset.load_raw(RAW_DIR, key) for key in dataset.RAW_FILES}
    splits = prepared.build_splits(
        raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"],
        val_size=cfg["val_size"], seed=cfg["seed"],
        limit_train=cfg["limit_train"], limit_test=cfg["limit_test"],
    )
    for name, (x, y) in splits.items():
        prepared.save_split(OUT_DIR / f"{name}.npz", x, y)
        print(f"prepare: {name}: {len(x)} images, mean pixel {x.mean():.4f}")


if __name__ == "__main__":
    main()
