"""Bundles side by side: what each precision costs in accuracy and buys in size, speed and memory.

    from kinema.quantize.compare import CompareSettings, compare_bundles, write_report
    settings = CompareSettings.default(load_bundle("kinema-tiny"))  # prompts from the manifest's tools section
    report, videos = compare_bundles("kinema-tiny", ["kinema-tiny-int8"], settings)
    write_report(report, videos, "report/")

Every bundle generates the same prompts with the same seeds, so the same initial noise.
Against the reference bundle (the first) it measures:

- per component: SQNR of each graph's outputs on the inputs recorded while the reference
  generated the first `detail_prompts` prompts (every step, both guidance branches);
- per step: PSNR of the denoised latent, teacher-forced (the bundle's denoiser fed the
  reference's trajectory and text embeddings) and free-running (its own trajectory);
- end to end: video PSNR and SSIM, PSNR of the frame-to-frame differences, mean frame
  change, and ShapesBench adherence when the prompts are ShapesBench rows;
- cost, each bundle in a fresh interpreter (quantize/cost.py): bytes, load time, peak
  RSS, time per denoiser step, end-to-end time.

`compare_generators` does the end-to-end part for any `generate(prompt, seed) -> frames`
callables, for changes that are not a bundle (fewer steps, skipped steps, caching).

The parts: settings.py (what is generated, the checks), run.py (running and measuring),
metrics.py (the numbers), report.py (the files), pictures.py (plots, sheet, video grid).

Runtime and NumPy only (kinema.runtime, kinema.models.shapes_bench); the report's
pictures need matplotlib and Pillow (kinema[export]); without them the JSON, Markdown,
and an HTML page without pictures are written and the report says so.
"""

from kinema.quantize.compare.metrics import video_metrics
from kinema.quantize.compare.pictures import contact_sheet, video_grid
from kinema.quantize.compare.report import check_report_dir, markdown_table, write_report
from kinema.quantize.compare.run import DEFINITIONS, compare_bundles, compare_generators
from kinema.quantize.compare.settings import CompareSettings, check_comparable, load_prompt_file

__all__ = [
    "DEFINITIONS",
    "CompareSettings",
    "check_comparable",
    "check_report_dir",
    "compare_bundles",
    "compare_generators",
    "contact_sheet",
    "load_prompt_file",
    "markdown_table",
    "video_grid",
    "video_metrics",
    "write_report",
]
