"""``unirank models optimize``: an ONNX (optionally int8, or run by OpenVINO) or bfloat16 copy of a version,
registered as its next version."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from unirank.cli.output import console, fail, print_json, print_stage
from unirank.errors import UnirankError


def optimize(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME@ALIAS) of a PyTorch version, or `base`.")],
    quantize: Annotated[Optional[str], typer.Option(help="`int8`: dynamic int8 quantization for this CPU.")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="`bfloat16`: compute in bf16, for CPUs with AMX or AVX512-BF16 and for GPUs: a PyTorch copy, or "
             "with --provider openvino the ONNX file run by OpenVINO in bf16.")] = None,
    provider: Annotated[Optional[str], typer.Option(
        help="ONNX Runtime execution provider for the copy: `cpu` (default) or `openvino` (needs the "
             "onnxruntime-openvino build; with --dtype bfloat16 the fastest CPU reranker here).")] = None,
    check_beir: Annotated[Optional[Path], typer.Option(
        "--check-beir", help="BEIR folder: compare nDCG@10 with the source first; refuse if it drops too much.")] = None,
    max_drop: Annotated[Optional[float], typer.Option(
        help="The most nDCG@10 the copy may lose in the --check-beir check, from 0 to 1 (default 0.005).")] = None,
    max_length: Annotated[Optional[int], typer.Option(
        "--max-length", help="Tokens the copy reads (at most the source's): a shorter window reranks faster; "
                             "check what it costs with --check-beir.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Registry name for `base` (default all-MiniLM-L6-v2).")] = None,
    force: Annotated[bool, typer.Option(
        help="Register the copy even when a version of the name holds the same files already.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new version and its checks as JSON.")] = False,
) -> None:
    """Make a faster copy of a model (ONNX, int8 with --quantize, OpenVINO, or bf16) as its next version."""
    from unirank.cli.context import client
    from unirank.models.optimize import Optimizer
    from unirank.registry import ModelRegistry

    # Optimum and the trainers' loggers print to stdout; stdout is kept for the result (and --json).
    with client() as ur, contextlib.redirect_stdout(sys.stderr):
        registry = ModelRegistry(ur.settings.models_dir)
        optimizer = None
        try:
            backend = ur.backend if check_beir is not None else None
            optimizer = Optimizer(ur.settings, registry, backend, stage=print_stage)
            result = optimizer.run(
                ref, name=name, quantize=quantize, dtype=dtype, check_beir=check_beir, max_drop=max_drop,
                max_seq_length=max_length, provider=provider, force=force)
        except UnirankError as exc:
            fail(exc)
        except KeyboardInterrupt:
            _interrupted(optimizer.registered if optimizer is not None else [])
        finally:
            registry.close()
    mv = result.version
    if as_json:
        print_json({**mv.to_dict(), "source": result.source.ref})
        return
    if mv.record.get("backend") == "onnx":
        on = mv.record.get("onnx_provider", "cpu")
        runs = f"{mv.record['onnx_file']} (ONNX Runtime, {on} provider{', ' + mv.record['dtype'] if mv.record.get('dtype') else ''})"
    else:
        runs = f"{mv.record['dtype']} weights (PyTorch)"
    console.print(f"Registered [bold]{mv.ref}[/bold]: {runs} from {result.source.ref}.")
    if result.check is not None:
        c = result.check
        console.print(f"{c.eval_set} {c.system} nDCG@10: {result.source.ref} {c.source:.4f}, {mv.ref} {c.optimized:.4f} "
                      f"(drop {c.drop:.4f}, allowed {c.max_drop:.4f}, {c.queries} queries).")
    console.print(f"Use it with {mv.role}.model = \"{mv.ref}\", or `unirank models promote {mv.ref} --alias prod`.")


def _interrupted(registered: list[str]) -> None:
    """Ctrl-C: say what was registered (it exited 130 without a word); the export and its check are removed."""
    from unirank.cli.output import errors

    said = f"{', '.join(registered)} registered before it stopped" if registered else "nothing was registered"
    errors.print(f"\ninterrupted: {said}.")
    raise typer.Exit(130)
