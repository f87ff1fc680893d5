"""The ``sercli`` command line: parses arguments, calls the library, prints.

Nothing heavy is imported at module level, so ``sercli --help`` stays fast.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import DEFAULT_MODEL
from .adaptation import MIN_FILES, SAMPLE_FILES

def _flags_without_type() -> None:
    """Typer 0.29 shows boolean flags as ``--quiet <bool>``, as if they took a value, and
    arguments with their Python type (``<list[str]>``); show neither."""
    from typer.core import TyperArgument, TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None:
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich
    if hasattr(TyperArgument, "display_type_rich"):
        TyperArgument.display_type_rich = lambda self, ctx: None


_flags_without_type()

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Speech emotion recognition for folders of recorded speech.",
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"sercli {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Speech emotion recognition for folders of recorded speech."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"sercli: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def annotate(
    inputs: List[str] = typer.Argument(..., help="Audio files, folders (recursive), or - for paths on stdin."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Shipped model name or model directory.", metavar="NAME|DIR"),
    output: str = typer.Option("emotions.parquet", "--output", "-o",
                               help="Output table: .parquet, .csv or .jsonl; - for CSV on stdout.", metavar="FILE"),
    segments: Optional[Path] = typer.Option(None, "--segments", help="Also write the segment table here: one row "
                                            "per speech region of long files, one per short file.", metavar="FILE"),
    windows: Optional[Path] = typer.Option(None, "--windows", help="Also write the window table here.", metavar="FILE"),
    vad: str = typer.Option("auto", "--vad", help="Split files into speech regions: auto (files of 30 s or "
                            "more), on, or off.", metavar="auto|on|off"),
    jobs: int = typer.Option(-1, "--jobs", "-j", help="Worker processes (-1: every core).", metavar="N"),
    calibration: str = typer.Option("off-domain", "--calibration", help="off-domain (default: confidence for "
                                    "recordings unlike the training corpora) or in-domain (for audio like them).",
                                    metavar="off-domain|in-domain"),
    adapt: str = typer.Option("auto", "--adapt", help="corpus: first measure up to "
                              f"{SAMPLE_FILES} input files and adapt to them (an encoder model standardises its "
                              "embeddings with their statistics; a CNN aligns their average spectrum with the "
                              f"training corpora's); needs {MIN_FILES} files or more. auto (default): corpus for "
                              "encoder models when there are enough files, none otherwise.",
                              metavar="auto|none|corpus"),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows "
                                        "(default: half a window, 1.5 s).", metavar="SECONDS"),
    classes: Optional[str] = typer.Option(None, "--classes", help="Answer among these of the model's classes only "
                                          "(comma-separated, e.g. anger,happiness,neutral,sadness; angry is read as "
                                          "anger): their probabilities are renormalised.", metavar="A,B,..."),
    include: List[str] = typer.Option([], "--include", help="Only files matching this glob (repeatable).", metavar="GLOB"),
    exclude: List[str] = typer.Option([], "--exclude", help="Skip files matching this glob (repeatable).", metavar="GLOB"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run into the same output."),
    backend: str = typer.Option("local", "--backend", help="local (joblib processes) or dask.", metavar="local|dask"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://HOST:PORT).", metavar="ADDRESS"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    """Classify the emotion of every audio file; write one row per file.

    Exit status: 0 every file ok, 1 some files not ok (each has a row saying why),
    2 unusable arguments, 3 the Dask scheduler went away (resume with --resume),
    130 interrupted (resume with --resume).
    """
    from .console.annotate import run_annotate

    try:
        code = run_annotate(inputs=inputs, model=model, output=output, segments=segments, windows=windows, vad=vad,
                            jobs=jobs, hop_s=hop, calibration=calibration, adapt=adapt, include=include,
                            classes=classes.split(",") if classes else None,
                            exclude=exclude, overwrite=overwrite, resume=resume, backend=backend,
                            scheduler=scheduler, quiet=quiet)
    except KeyboardInterrupt:  # before the run started, or while its table was written: nothing half-done
        typer.echo("sercli: interrupted; run the same command again (with --resume if a journal was left).", err=True)
        code = 130
    raise typer.Exit(code)


models_app = typer.Typer(help="List and describe the shipped models.", invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List the shipped models with their headline numbers."""
    if ctx.invoked_subcommand is None:
        from .console.models import print_models

        print_models()


@models_app.command("show")
def models_show(name: str = typer.Argument(..., help="Model name or directory.")) -> None:
    """Print a model's card."""
    from .console.models import print_card

    raise typer.Exit(print_card(name))


@app.command()
def summarize(
    results: Path = typer.Argument(..., help="A table written by annotate (.parquet, .csv, .jsonl)."),
    by: Optional[str] = typer.Option(None, "--by", help="folder, depth:N, a column, or a regex with a group.", metavar="GROUPING"),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Manifest CSV (path,emotion) to compare with.", metavar="FILE"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report here.", metavar="FILE"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the statistics as JSON here.", metavar="FILE"),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the per-group table as CSV here.", metavar="FILE"),
    label_map: List[str] = typer.Option([], "--map", help="Score the reference label LABEL as the model's CLASS "
                                        "(e.g. calm=neutral; repeatable).", metavar="LABEL=CLASS"),
    timelines: int = typer.Option(0, "--timelines", help="With --html: a timeline for the longest N recordings "
                                  "(0: every recording of 30 s or more).", metavar="N", min=0),
    moments: int = typer.Option(3, "--moments", help="Moments to list per emotion (the strongest regions, or the "
                                "most confident files).", metavar="N", min=0),
) -> None:
    """Corpus statistics of an emotion table: per emotion, per group, confidence, moments, agreement."""
    from .console.reports import run_summarize

    raise typer.Exit(run_summarize(results=results, by=by, truth=truth, html_out=html_out, json_out=json_out,
                                   csv_out=csv_out, label_map=label_map, timelines=timelines or None,
                                   per_class=moments))


@app.command()
def label(
    source: str = typer.Argument(..., help="A table written by annotate (.parquet, .csv, .jsonl; files or segments), "
                                 "or a folder of audio to annotate now (once: the table is kept next to --labels)."),
    labels: Path = typer.Option(Path("labels.csv"), "--labels", help="Manifest CSV the labels go to; run "
                                "again with the same file to continue.", metavar="FILE"),
    classes: Optional[str] = typer.Option(None, "--classes", help="Your label set, comma-separated (any names; "
                                          "default: the model's classes).", metavar="A,B,..."),
    per_class: int = typer.Option(10, "--per-class", help="Labels per class to aim for.", metavar="N"),
    by: Optional[str] = typer.Option(None, "--by", help="Groups (speakers, calls) to take turns in the choice and to "
                                     "write as each clip's speaker, so fine-tuning validates on whole groups: "
                                     "folder, depth:N, a column, or a regex with a group (as summarize --by).",
                                     metavar="GROUPING"),
    strategy: str = typer.Option("groups", "--choose", help="Order of the clips: random (a shuffle), groups (round "
                                 "robin over --by groups), spread (round robin over predicted classes, then groups) "
                                 "or uncertain (the same, least certain first).",
                                 metavar="random|groups|spread|uncertain"),
    limit: int = typer.Option(1000, "--limit", min=1, help="Clips not labelled yet to choose at most (the page "
                              "serves the chosen clips only).", metavar="N"),
    not_in: List[Path] = typer.Option([], "--not-in", help="Leave out the clips of this label file (e.g. the "
                                      "training labels, when labelling a test set); repeatable.", metavar="FILE"),
    test: bool = typer.Option(False, "--test", help="Label a test set: the page and the end print the summarize "
                              "--truth command that scores a table with it, not a training command."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model to annotate a folder with.",
                              metavar="NAME|DIR"),
    jobs: int = typer.Option(-1, "--jobs", "-j", help="Worker processes for annotating a folder.", metavar="N"),
    port: int = typer.Option(0, "--port", help="Port on 127.0.0.1 (0: a free one).", metavar="N"),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the page in the browser."),
) -> None:
    """Label clips in the browser, chosen from what the model heard, for fine-tuning.

    Keys on the page: a digit labels the clip, s skips it, u undoes, space plays it again.
    Labels are saved as they are given; at the end the sercli train --init command is printed.
    """
    from .console.label import run_label

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    raise typer.Exit(run_label(source=source, labels=labels, classes=names, per_class=per_class, by=by,
                               strategy=strategy, limit=limit, not_in=not_in, test=test, model=model, jobs=jobs,
                               port=port, open_browser=open_browser))


@app.command()
def evaluate(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Shipped model name or model directory.", metavar="NAME|DIR"),
    manifest: List[Path] = typer.Option(..., help="Manifest CSV with path, emotion and a split column; "
                                        "repeatable (the manifests are read as one).", metavar="FILE"),
    split: str = typer.Option("test", help="Which rows to evaluate."),
    split_column: str = typer.Option("split", help="Column holding the split, or loco:CORPUS "
                                     "(that corpus is test)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the confusion matrix as PNG here."),
    record: List[Path] = typer.Option([], "--record", help="Store the result in this model directory's card "
                                      "(under the split column's protocol); repeatable."),
    jobs: int = typer.Option(-1, "--jobs", "-j", help="Worker processes."),
    calibration: str = typer.Option("off-domain", "--calibration", help="Calibration of the confidence "
                                    "(as annotate); ECE is reported for both.", metavar="off-domain|in-domain"),
    adapt: str = typer.Option("auto", "--adapt", help="As annotate --adapt, on the evaluated rows (under "
                              "loco:CORPUS the held-out corpus is the user's corpus); --record stores a result "
                              "with none or corpus given under PROTOCOL+adapt_none / +adapt_corpus, and with "
                              "auto (default, what annotate does by default) under PROTOCOL.",
                              metavar="auto|none|corpus"),
) -> None:
    """Accuracy, UAR, macro-F1, per-class and per-corpus tables and ECE on a manifest split."""
    from .console.reports import run_evaluate

    raise typer.Exit(run_evaluate(model=model, manifest=manifest, split=split, split_column=split_column,
                                  json_out=json_out, plot=plot, record=record, jobs=jobs, calibration=calibration,
                                  adapt=adapt, command="sercli " + shlex.join(sys.argv[1:])))


@app.command()
def manifest(
    source: Path = typer.Argument(..., help="A corpus folder, or a CSV of your labels (path and label columns).",
                                  metavar="SOURCE"),
    corpus_format: str = typer.Option("folders", "--format", help="folders (DIR/<class>/*.wav), crema-d, ravdess, "
                                      "tess or savee; ignored for a CSV.", metavar="LAYOUT"),
    speaker: Optional[str] = typer.Option(None, "--speaker", help="Regex with a group that finds the speaker in "
                                          "each path (for speaker-grouped validation).", metavar="REGEX"),
    label_column: str = typer.Option("emotion", "--label-column", help="The label column of a CSV source.",
                                     metavar="COLUMN"),
    output: Path = typer.Option(Path("manifest.csv"), "--output", "-o", help="Manifest CSV to write."),
    val: float = typer.Option(0.0, "--val", help="Add a split column with this share of rows as val "
                              "(whole speakers)."),
    test: float = typer.Option(0.0, "--test", help="... and this share as test (whole speakers)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
) -> None:
    """Build a manifest (path, emotion, speaker, ...) for train, fine-tuning or evaluate.

    From a folder per class (DIR/<class>/*.wav: the folder name is the label), a corpus in its
    original layout, or a CSV of labels. With --val/--test it also writes a speaker-independent
    split column (train/val/test).
    """
    from .training.corpora import build_manifest

    try:
        df, warnings = build_manifest(source, corpus_format=corpus_format, speaker=speaker, label_column=label_column,
                                      val=val, test=test, seed=seed)
    except ValueError as exc:
        _fail(str(exc))
    df.to_csv(output, index=False)
    counts = df["emotion"].value_counts()
    typer.echo(f"wrote {len(df)} rows to {output} ({len(counts)} classes: "
               f"{', '.join(f'{c} {n}' for c, n in counts.items())})", err=True)
    for warning in warnings:
        typer.echo(f"sercli: warning: {warning}", err=True)


@app.command()
def train(
    manifest: List[Path] = typer.Option(..., help="Manifest CSV: path, emotion (any labels), and a split or "
                                        "speaker column; repeatable (the manifests are read as one).",
                                        metavar="FILE"),
    out: Path = typer.Option(..., help="Model directory to write (resumes if it holds a checkpoint)."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune this model (a shipped name or a model "
                                       "directory) instead of training from scratch; its feature front end is "
                                       "kept, and its head is replaced when the manifest's classes differ.",
                                       metavar="NAME|DIR"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="With --init: your recordings (a folder, or the "
                                          "emotion table annotate or sercli label made of it), whose statistics "
                                          "standardise the fine-tuned model's inputs, as --adapt auto does (default: "
                                          "every file the manifest lists).", metavar="DIR|TABLE"),
    arch: str = typer.Option("mfcc-cnn", help="mel-cnn, mfcc-cnn or mfcc-crnn (from scratch), or whisper-base / "
                             "whisper-tiny.en (a frozen pretrained encoder and a head; needs the encoder extra); "
                             "--init keeps the base model's."),
    layers: int = typer.Option(3, help="whisper-*: encoder blocks kept (the ones above are never run)."),
    head: str = typer.Option("linear", help="whisper-*: linear or mlp (one hidden layer).", metavar="linear|mlp"),
    norm: str = typer.Option("corpus", help="whisper-*: corpus (standardise each training corpus's embeddings "
                             "with its own statistics) or none.", metavar="corpus|none"),
    quantize: bool = typer.Option(True, help="whisper-*: int8 dynamic-range weights in the LiteRT file."),
    c: Optional[float] = typer.Option(None, "--C", help="whisper-*: the linear head's inverse regularisation "
                                      "(default: the best on val of 0.0003, 0.001, 0.01; held-out corpora prefer "
                                      "small values: benchmarks/encoder_screen.py).", metavar="C"),
    weighting: str = typer.Option("clips", help="whisper-*: clips (every training window counts once) or corpora "
                                  "(every corpus weighs the same).", metavar="clips|corpora"),
    mask_padding: bool = typer.Option(False, help="whisper-*: attention and pooling skip the padding of clips "
                                      "shorter than a window."),
    split_column: str = typer.Option("split", help="Column with train/val/test, or loco:CORPUS to hold "
                                     "that corpus out (leave-one-corpus-out); without it every row trains, and a "
                                     "validation slice is carved out (whole speakers where possible)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default 25; 30 with --init)."),
    freeze_epochs: Optional[int] = typer.Option(None, help="With --init: epochs that train only the classifier "
                                                "head before the rest is unfrozen (default 0)."),
    seed: int = typer.Option(0, help="Random seed."),
    patience: int = typer.Option(10, help="Stop after this many epochs without a better validation score."),
    select_by: Optional[str] = typer.Option(None, help="What picks the best epoch: macro_f1 (default) or nll "
                                            "(validation log-loss; the default with --init).",
                                            metavar="macro_f1|nll"),
    learning_rate: float = typer.Option(1e-3, help="Peak learning rate; with --init the network trains at a "
                                        "tenth of it (the head alone, during --freeze-epochs, at all of it)."),
    mixup: float = typer.Option(0.2, help="Mixup Beta(alpha, alpha) parameter; 0 turns mixup off."),
    noise_prob: float = typer.Option(0.5, help="Share of training windows that get additive noise."),
    spec_augment: bool = typer.Option(True, help="SpecAugment frequency and time masks."),
    speed_perturb: bool = typer.Option(True, help="Train on 0.9x / 1.0x / 1.1x speed copies."),
    corpus_balance: bool = typer.Option(False, help="Weight files so that every corpus counts equally."),
    channel_prob: float = typer.Option(0.0, help="Share of windows given a random channel (band limit, EQ, "
                                       "reverberation)."),
    vtlp: float = typer.Option(0.0, help="Largest vocal-tract-length warp (0.1: factors 0.9-1.1); 0 = off."),
    trim_db: Optional[float] = typer.Option(None, help="Trim leading/trailing frames this many dB below the "
                                            "loudest (a feature parameter: annotate does the same)."),
    floor_db: Optional[float] = typer.Option(None, help="Floor each window this many dB below its loudest bin "
                                             "(a feature parameter)."),
    jobs: int = typer.Option(-1, help="Processes for feature extraction."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default ~/.cache/sercli)."),
) -> None:
    """Train a model on the manifest's train rows, early-stopping on val; or, with --init, fine-tune a
    model on a few labelled clips of your own (at least 5 per class)."""
    from .models import ModelNotFound

    from .console.train import run_train, run_train_encoder
    from .training.command import train_options

    missing = [m for m in manifest if not m.is_file()]
    if missing:
        _fail(f"the manifest {missing[0]} does not exist.")
    manifest = manifest[0] if len(manifest) == 1 else manifest
    try:
        opts = train_options(arch=arch, init=init, corpus=corpus, layers=layers, head=head, norm=norm,
                             quantize=quantize, C=c, weighting=weighting, mask_padding=mask_padding,
                             split_column=split_column, seed=seed, epochs=epochs, freeze_epochs=freeze_epochs,
                             select_by=select_by, patience=patience, learning_rate=learning_rate, mixup_alpha=mixup,
                             noise_prob=noise_prob, spec_augment=spec_augment, speed_perturb=speed_perturb,
                             corpus_balance=corpus_balance, channel_prob=channel_prob, vtlp=vtlp, trim_db=trim_db,
                             floor_db=floor_db)
    except (ModelNotFound, ValueError) as exc:
        _fail(str(exc))
    command = "sercli " + shlex.join(sys.argv[1:])
    if not hasattr(opts, "epochs"):  # an encoder model, or an anchored head for one
        raise typer.Exit(run_train_encoder(manifest=manifest, out=out, opts=opts, init=init, corpus=corpus, jobs=jobs,
                                           cache_dir=cache_dir, command=command))
    raise typer.Exit(run_train(manifest=manifest, out=out, opts=opts, jobs=jobs, cache_dir=cache_dir,
                               command=command))


if __name__ == "__main__":
    app()
