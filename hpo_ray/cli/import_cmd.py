"""`hpo-ray import-manifest --input P --out O --src-lang en --tgt-lang zh`: an original HPO / InfiniSST
parquet manifest → an hpo-ray manifest over the same feature files (see docs/data.md)."""

import argparse
import sys

from hpo_ray.data.manifest import ManifestError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="parquet in the original schema (audio_npy_path, audio_npy_row, ...)")
    parser.add_argument("--out", required=True, help="where to write the hpo-ray manifest (.parquet)")
    parser.add_argument("--src-lang", required=True, help="source language code (the original schema has none)")
    parser.add_argument("--tgt-lang", required=True, help="target language code")
    parser.add_argument("--frame-seconds", type=float, default=0.08, help="seconds per feature frame (80 ms for InfiniSST)")
    parser.add_argument(
        "--chunk-frames", type=int, default=None, help="expected frames per chunk (data.chunk_frames); rows that differ are an error"
    )


def run(args: argparse.Namespace) -> int:
    from hpo_ray.data.import_hpo import import_original

    try:
        report = import_original(args.input, args.out, args.src_lang, args.tgt_lang, args.frame_seconds, args.chunk_frames)
    except ManifestError as exc:
        print(f"hpo-ray import-manifest: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.out}: {report.talks} talks, {report.sentences} sentences, {report.seconds:.0f} s; "
        f"chunk_frame_size {report.chunk_frames} → set data.chunk_frames={report.chunk_frames}, "
        f"data.frame_seconds={args.frame_seconds}"
    )
    return 0
