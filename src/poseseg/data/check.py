"""``poseseg check-data``: what a COCO-format dataset holds and what is wrong with it, as a report.

Parses the JSON exactly as :class:`poseseg.data.coco.CocoPeopleDataset` does (the same rules for
crowd regions, degenerate boxes and the keypoint schema), optionally opens every image, and never
raises for a problem of the data: problems are listed in the report instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from poseseg.data.coco_json import (
    DatasetError,
    check_schema,
    empty_dataset_problem,
    load_coco_json,
    parse_coco_people,
)
from poseseg.data.eval_sanity import check_ground_truth
from poseseg.data.image_io import DEFAULT_MAX_PIXELS, ImageReadError, load_image_rgb
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES

__all__ = ["summarize_dataset", "format_report"]


def summarize_dataset(json_path: str | os.PathLike, image_dir: str | os.PathLike, *,
                      category: str | int = "person", check_images: bool = False,
                      max_image_pixels: int | None = DEFAULT_MAX_PIXELS, num_keypoints: int | None = None,
                      oks_sigmas: list[float] | None = None, flip_pairs: list | None = None,
                      min_box_size: float = 1.0, max_examples: int = 10,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Everything ``poseseg check-data`` reports about a dataset, as a JSON-serialisable dict.

    Never raises for a problem of the data: problems go to ``errors`` (the dataset would fail
    or lose images) and ``warnings`` (annotations that will be dropped). ``check_images`` opens
    and decodes every file (slow); otherwise only existence is checked. ``report["ok"]`` is
    True when there is no error.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    report: dict[str, Any] = {"json_path": str(json_path), "image_dir": str(image_dir), "ok": False,
                              "category": None, "schema": None, "counts": {}, "missing_files": [],
                              "num_missing_files": 0, "images_checked": bool(check_images),
                              "unreadable_images": [], "num_unreadable_images": 0, "size_mismatches": [],
                              "num_size_mismatches": 0, "bad_boxes": [], "errors": [], "warnings": []}
    try:
        parsed = parse_coco_people(json_path, category=category, schema=None, oks_sigmas=oks_sigmas,
                                   flip_pairs=flip_pairs, require_sigmas=False, keep_empty=True,
                                   min_box_size=min_box_size, strict=False, max_examples=max_examples)
    except DatasetError as e:
        report["errors"].append(str(e))
        return report
    s, schema = parsed.store, parsed.schema
    report["category"] = parsed.category
    report["counts"] = dict(parsed.stats)
    report["errors"].extend(parsed.errors)
    report["warnings"].extend(parsed.warnings)
    report["bad_boxes"] = parsed.bad_box_examples
    if schema is not None:
        names = [n.lower() for n in schema.names]
        sig = "coco" if names == COCO_KEYPOINT_NAMES and not oks_sigmas else ("given" if schema.sigmas else None)
        report["schema"] = {"num_keypoints": schema.num_keypoints, "names": list(schema.names),
                            "skeleton": [list(e) for e in schema.skeleton],
                            "flip_pairs": [list(p) for p in schema.flip_pairs], "sigmas": sig}
        if sig is None:
            report["errors"].append(
                f"{schema.num_keypoints} keypoints that are not COCO-17: evaluation needs OKS sigmas; set "
                f"data.oks_sigmas to {schema.num_keypoints} values")
        unpaired = [n for i, n in enumerate(schema.names) if (schema.is_left(i) or schema.is_right(i))
                    and not any(i in p for p in schema.flip_pairs)]
        if unpaired:
            report["warnings"].append(f"left/right keypoints without a flip partner: {', '.join(unpaired)} "
                                      f"(set data.flip_pairs)")
        if num_keypoints is not None:
            try:
                check_schema(schema, num_keypoints, source=str(json_path))
            except DatasetError as e:
                report["errors"].append(str(e))
    elif num_keypoints is not None:
        report["warnings"].append("the category has no keypoints: only box and mask heads can train on it")

    if not image_dir.is_dir():
        report["errors"].append(f"image directory {image_dir} does not exist (data.train_images / data.val_images)")
    n = len(s.image_ids)
    for i in range(n):
        fname = s.file_names[i]
        path = image_dir / fname
        if not path.is_file():
            report["num_missing_files"] += 1
            if len(report["missing_files"]) < max_examples:
                report["missing_files"].append(fname)
        elif check_images:
            try:
                arr = load_image_rgb(path, max_image_pixels)
            except ImageReadError as e:
                report["num_unreadable_images"] += 1
                if len(report["unreadable_images"]) < max_examples:
                    report["unreadable_images"].append({"file_name": fname, "reason": e.reason})
            else:
                want = (int(s.heights[i]), int(s.widths[i]))
                if arr.shape[:2] != want:
                    report["num_size_mismatches"] += 1
                    if len(report["size_mismatches"]) < max_examples:
                        report["size_mismatches"].append({"file_name": fname, "file_hw": list(arr.shape[:2]),
                                                          "json_hw": list(want)})
        if progress is not None:
            progress(i + 1, n)
    if report["num_missing_files"]:
        report["errors"].append(f"{report['num_missing_files']} of {n} image files are missing under {image_dir} "
                                f"(they would be skipped in training)")
    if report["num_unreadable_images"]:
        report["errors"].append(f"{report['num_unreadable_images']} images cannot be read (they would be skipped)")
    if report["num_size_mismatches"]:
        report["errors"].append(f"{report['num_size_mismatches']} images differ in size from the JSON's "
                                f"width/height (they would be skipped)")
    empty = empty_dataset_problem(json_path, parsed.stats, parsed.category["name"])
    if empty:
        report["errors"].append(empty)  # train refuses it with these words
    # what `poseseg eval` would warn about, in the same words
    report["eval_warnings"] = check_ground_truth(load_coco_json(json_path), category_id=parsed.category["id"],
                                                 sigmas=schema.sigmas if schema is not None else None,
                                                 keypoints=schema is not None)
    report["warnings"].extend(f"evaluation: {w['message']}" for w in report["eval_warnings"])
    report["ok"] = not report["errors"]
    return report


# the report's lists, one line per item, in the order they are printed
DETAIL_LINES = (
    ("missing_files", lambda f: f"  missing: {f}"),
    ("unreadable_images", lambda u: f"  unreadable: {u['file_name']}: {u['reason']}"),
    ("size_mismatches", lambda m: f"  wrong size: {m['file_name']}: file {m['file_hw']} vs JSON {m['json_hw']} (HxW)"),
    ("bad_boxes", lambda b: f"  bad box: annotation {b['annotation_id']} in {b['file_name']}: bbox {b['bbox']}"),
    ("warnings", lambda w: f"WARNING  {w}"),
    ("errors", lambda e: f"ERROR    {e}"),
)


def format_report(report: dict[str, Any]) -> str:
    """A human-readable text of :func:`summarize_dataset`'s report."""
    lines = [f"dataset  {report['json_path']}", f"images   {report['image_dir']}"]
    cat = report.get("category")
    if cat:
        lines.append(f"category {cat['name']!r} (id {cat['id']})")
    sch = report.get("schema")
    if sch:
        sig = {"coco": "COCO's", "given": "given"}.get(sch["sigmas"], "MISSING")
        lines.append(f"keypoints {sch['num_keypoints']}: {', '.join(sch['names'])}")
        lines.append(f"  skeleton edges {len(sch['skeleton'])}, flip pairs {len(sch['flip_pairs'])}, "
                     f"OKS sigmas {sig}")
    elif cat:
        lines.append("keypoints none (the category has no 'keypoints' list)")
    c = report.get("counts") or {}
    if c:
        lines.append(f"counts   {c['images']} images ({c['negative_images']} without people, "
                     f"{c['crowd_only_images']} of them crowd-only), {c['people']} people, {c['crowd']} crowd regions")
        lines.append(f"         {c['keypoints_labeled']} labeled keypoints ({c['keypoints_visible']} visible), "
                     f"{c['people_with_keypoints']} people with keypoints, {c['dropped_boxes']} dropped boxes")
    checked = "opened and decoded" if report.get("images_checked") else "existence only; --check-images decodes"
    lines.append(f"files    {report['num_missing_files']} missing, {report['num_unreadable_images']} unreadable, "
                 f"{report['num_size_mismatches']} wrong size ({checked})")
    for key, line in DETAIL_LINES:
        lines += [line(item) for item in report.get(key, [])]
    lines.append("OK" if report.get("ok") else f"NOT OK ({len(report.get('errors', []))} errors)")
    return "\n".join(lines)

