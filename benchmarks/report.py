"""The benchmark's outputs: the printed table and the JSON results file."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def print_table(r: dict) -> None:
    m, v = r["machine"], r["versions"]
    print(f"\n== fashion-vae benchmark  {r['date']}")
    print(f"machine : {m['cpu_model']}, {m['usable_cpus']} usable / {m['logical_cpus']} logical CPUs, "
          f"{' '.join(m['simd'])}; load avg {m['load_average_at_start'][0]:.2f} -> {r['load_average_at_end'][0]:.2f}")
    print(f"versions: python {v['python']}, tensorflow {v['tensorflow']}, keras {v['keras']}, numpy {v['numpy']}; "
          f"oneDNN kernels in this process: {'on' if r['settings']['onednn'] else 'off'}")
    mm = r["matmul"]
    print(f"matmul  : numpy float32 {mm['n']}^2: {mm['gflops_start']:.1f} / {mm['gflops_mid']:.1f} / "
          f"{mm['gflops_end']:.1f} GFLOP/s (start/mid/end); using {mm['gflops_used']:.1f}")
    fs = r["flops_per_image"]["seed"]
    print(f"FLOPs   : seed forward {fs['forward_flop'] / 1e6:.2f} MFLOP, train {fs['train_flop'] / 1e6:.2f} MFLOP/image "
          f"(reference {fs['reference_mflop']['forward']}/{fs['reference_mflop']['train']}: "
          f"{'match' if fs['matches_reference'] else 'MISMATCH'}); default train "
          f"{r['flops_per_image']['default']['train_flop'] / 1e6:.2f} MFLOP/image")
    s = r["settings"]
    print(f"\ntraining, {s['train_images']} images/epoch, {s['reps']} interleaved reps after 1 warm-up, "
          f"{s['threads']} threads")
    print(f"{'configuration':30s} {'batch':>5s} {'img/s med':>9s} {'min':>7s} {'max':>7s} {'GFLOP/s':>8s} "
          f"{'%matmul':>7s} {'x plain':>7s}")
    plain_name = next(iter(r["training"]))
    for name, t in r["training"].items():
        if "same_as" in t:
            print(f"{name:30s}  = {t['same_as']}")
            continue
        ips = t["images_per_second"]
        ratio = 1.0 if name == plain_name else r["ratio_over_plain_defaults"][name]
        print(f"{name:30s} {t['batch_size']:5d} {ips['median']:9.0f} {ips['min']:7.0f} {ips['max']:7.0f} "
              f"{t['gflops']['median']:8.1f} {100 * t['fraction_of_matmul_peak']:6.1f}% {ratio:7.2f}")
    e = r["evaluation"]
    print(f"\nevaluation ({e['source']}):")
    print(f"  ELBO pass : {e['elbo']['images_per_second']['median']:9.0f} images/s ({e['elbo']['images']} test images)")
    iw = e["iwae"]
    print(f"  IWAE K={iw['k']}: {iw['images_per_second']['median']:9.2f} images/s "
          f"({iw['decoder_samples_per_second']:.0f} decoded samples/s; full test set ~"
          f"{iw['projected_seconds_full_test_set'] / 60:.1f} min)")
    d = r["dvc_repro_noop"]
    print(f"\ndvc repro no-op : {d['seconds']:.2f} s" if d["seconds"] is not None else f"\ndvc repro no-op : n/a ({d['reason']})")
    mem = r["train_stage_memory"]
    if mem.get("max_rss_mib") is not None:
        print(f"train 1 epoch   : max RSS {mem['max_rss_mib']:.0f} MiB ({mem['train_images']} images, "
              f"{mem['wall_seconds_including_startup']} s incl. start-up, "
              f"{mem['train_summary'].get('train_images_per_second')} images/s)")
    else:
        print(f"train 1 epoch   : n/a ({mem.get('reason')})")
    print(f"benchmark took {r['bench_seconds']} s")
