"""``tune-lsd embed | retrieve``: a trained model applied to a user's own images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tune_lsd.cli.command import Command
from tune_lsd.cli.stores import add_store_options, existing_store

MODEL_HELP = "models:/NAME@champion, runs:/RUN/model, a folder or a model file"


def load_embedder(args: argparse.Namespace) -> Any:
    """The model of ``--model``; a models:/ or runs:/ URI is looked up in an existing store."""
    from tune_lsd.serving.retrieval import is_model_uri, load_embedder

    return load_embedder(args.model, existing_store(args) if is_model_uri(args.model) else None)


class Embed(Command):
    name = "embed"
    help = "embed a folder of images with a trained model (.npy)"
    epilog = """MODEL: a models:/ or runs:/ URI (resolved in --tracking-uri, default the runs folder's store),
an MLflow model folder, or a tune_lsd model file (best.pt of `tune-lsd train`, a trial's model.pt).

examples:
  tune-lsd embed --model models:/demo-best@champion --images photos/ -o embeddings.npy
  tune-lsd embed --model runs/train/demo/best.pt --images photos/ -o embeddings.npy
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help=MODEL_HELP)
        parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
        parser.add_argument("--output", "-o", default="embeddings.npy", help="(default: embeddings.npy)")
        add_store_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.serving.retrieval import embed_folder

        count, paths_file = embed_folder(load_embedder(args), Path(args.images), Path(args.output))
        print(f"wrote {count} embeddings to {args.output} (image paths, in order: {paths_file})")
        return 0


class Retrieve(Command):
    name = "retrieve"
    help = "nearest gallery images of query images: CSV + HTML page"
    epilog = """MODEL as for `tune-lsd embed`. With DIR/<class>/* folders, neighbours are marked correct or
wrong and Recall@1 / Recall@k are given; with --query equal to --gallery, each image is a
query against the others.

examples:
  tune-lsd retrieve --model models:/demo-best@champion --gallery shop/ --query photos/ -k 5 -o retrieval/
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help=MODEL_HELP)
        parser.add_argument("--gallery", required=True, help="folder of gallery images")
        parser.add_argument(
            "--query", help="folder of query images (default: the gallery, each image against the others)"
        )
        parser.add_argument("-k", type=int, default=5, help="neighbours per query (default: 5)")
        parser.add_argument(
            "--output", "-o", default="retrieval", help="folder for neighbours.csv and index.html (default: retrieval)"
        )
        add_store_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.serving.retrieval import write_retrieval

        result = write_retrieval(
            load_embedder(args), Path(args.gallery), Path(args.query or args.gallery), args.k, Path(args.output)
        )
        recalls = "  ".join(f"{key} {value:.4f}" for key, value in result.items() if key.startswith("recall@"))
        print(
            f"{result['queries']} queries x {result['k']} neighbours in {result['gallery']} gallery images"
            + (f": {recalls}" if recalls else "")
        )
        print(f"wrote {result['csv']}\nopen it: {Path(result['page']).resolve().as_uri()}")
        return 0
