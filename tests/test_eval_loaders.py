"""Loaders read small fixture files written here in each benchmark's distributed format."""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from jvlm.errors import BenchmarkError, JVLMError
from jvlm.eval import loaders
from jvlm.eval.loaders import BENCHMARKS, MULTILINGUAL_LANGUAGES, VQA_AVERAGE, load_benchmark
from jvlm.eval.scorers import SCORERS


def png_bytes(color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: Path, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), color).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_tsv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def decodes_to_image(source) -> bool:
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return Image.open(io.BytesIO(data)).size == (4, 3)


# ------------------------------------------------------------------ JSON VQA files


def test_docvqa_reads_data_list_and_resolves_image_paths(tmp_path):
    write_image(tmp_path / "val" / "documents" / "xnbl0037_1.png")
    data = {
        "dataset_name": "docvqa",
        "data": [
            {
                "questionId": 337,
                "question": "what is the date mentioned in this letter?",
                "image": "documents/xnbl0037_1.png",
                "docId": 279,
                "answers": ["1/8/93"],
                "question_types": ["handwritten", "form"],
            }
        ],
    }
    path = write_json(tmp_path / "val" / "val_v1.0.json", data)
    [sample] = load_benchmark("docvqa", path)
    assert (sample.id, sample.answers, sample.task) == ("337", ["1/8/93"], "docvqa")
    assert sample.images == [tmp_path / "val" / "documents" / "xnbl0037_1.png"]
    assert sample.meta["question_types"] == ["handwritten", "form"]
    assert sample.choices is None


def test_docvqa_image_root_without_the_documents_prefix(tmp_path):
    write_image(tmp_path / "images" / "xnbl0037_1.png")
    data = {"data": [{"questionId": 1, "question": "q", "image": "documents/xnbl0037_1.png"}]}
    path = write_json(tmp_path / "qas" / "test_v1.0.json", data)
    [sample] = loaders.load_docvqa(path, image_root=tmp_path / "images")
    assert decodes_to_image(sample.images[0])
    assert sample.answers == []  # the test split ships without answers


def test_infovqa_uses_image_local_name(tmp_path):
    write_image(tmp_path / "37313.jpeg")
    data = {"data": [{"questionId": 9, "question": "How many?", "image_local_name": "37313.jpeg", "answers": ["4"]}]}
    [sample] = load_benchmark("infovqa", write_json(tmp_path / "infographicsVQA_val_v1.0.json", data))
    assert sample.images == [tmp_path / "37313.jpeg"]
    assert sample.answers == ["4"]


def test_textvqa_finds_images_in_train_images(tmp_path):
    write_image(tmp_path / "train_images" / "003a8ae2ef43b901.jpg")
    record = {"question_id": 34602, "question": "what brand?", "image_id": "003a8ae2ef43b901", "answers": ["nous"] * 10}
    [sample] = load_benchmark("textvqa", write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [record]}))
    assert sample.images == [tmp_path / "train_images" / "003a8ae2ef43b901.jpg"]
    assert len(sample.answers) == 10


def test_chartqa_reads_list_with_imgname_query_label(tmp_path):
    write_image(tmp_path / "test" / "png" / "41699051005347.png")
    records = [{"imgname": "41699051005347.png", "query": "What is the value?", "label": 12}]
    [sample] = load_benchmark("chartqa", write_json(tmp_path / "test" / "test_human.json", records))
    assert (sample.id, sample.question, sample.answers) == ("test_human-0", "What is the value?", ["12"])
    assert sample.meta["file"] == "test_human.json"


def test_ocrbench_category_and_sibling_image_folder(tmp_path):
    write_image(tmp_path / "OCRBench_Images" / "HME100k" / "a.jpg")
    records = [
        {
            "dataset_name": "HME100k",
            "type": "Handwritten Mathematical Expression Recognition",
            "image_path": "HME100k/a.jpg",
            "question": "Write the expression in LaTeX.",
            "answers": "x ^ { 2 }",
        }
    ]
    [sample] = load_benchmark("ocrbench", write_json(tmp_path / "OCRBench" / "OCRBench.json", records))
    assert sample.category == "Handwritten Mathematical Expression Recognition"
    assert sample.answers == ["x ^ { 2 }"]  # a bare string becomes a one-element list
    assert sample.images == [tmp_path / "OCRBench_Images" / "HME100k" / "a.jpg"]


def test_charxiv_reasoning_file_keyed_by_figure(tmp_path):
    write_image(tmp_path / "images" / "14.jpg")
    data = {"14": {"figure_id": 14, "query": "Provide the accuracy.", "answer": "94", "inst_category": 3}}
    [sample] = load_benchmark("charxiv", write_json(tmp_path / "data" / "reasoning_val.json", data))
    assert (sample.id, sample.category, sample.answers) == ("14", "number-in-chart", ["94"])
    assert sample.meta["inst_category"] == 3


# ---------------------------------------------------------- parquet / JSONL exports


def test_ai2d_parquet_with_embedded_image(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "question": ["Which stage comes first?"],
            "options": [["egg", "larva", "pupa", "adult"]],
            "answer": ["1"],
            "image": [{"bytes": png_bytes(), "path": "0.png"}],
        }
    )
    pq.write_table(table, tmp_path / "test.parquet")
    [sample] = load_benchmark("ai2d", tmp_path / "test.parquet")
    assert sample.answers == ["B"]  # index 1 -> second option
    assert sample.choices == ["egg", "larva", "pupa", "adult"]
    assert isinstance(sample.images[0], bytes) and decodes_to_image(sample.images[0])


def test_ai2d_jsonl_with_image_path(tmp_path):
    write_image(tmp_path / "images" / "1.png")
    record = {"question": "q", "options": ["a", "b"], "answer": "0", "image": "images/1.png"}
    [sample] = load_benchmark("ai2d", write_jsonl(tmp_path / "ai2d.jsonl", [record]))
    assert sample.images == [tmp_path / "images" / "1.png"]
    assert sample.answers == ["A"]


def test_realworldqa_parquet_parses_inline_options(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    question = "Which way is the car turning?\nA. left\nB. right\nC. straight\nPlease answer directly."
    table = pa.table({"question": [question], "answer": ["B"], "image": [{"bytes": png_bytes(), "path": None}]})
    pq.write_table(table, tmp_path / "realworldqa.parquet")
    [sample] = load_benchmark("realworldqa", tmp_path / "realworldqa.parquet")
    assert sample.choices == ["left", "right", "straight"]
    assert sample.answers == ["B"]


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "test.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(BenchmarkError, match="pip install pyarrow"):
        load_benchmark("ai2d", path)


# ------------------------------------------------------------------------- TSVs


def mcq_row(index, answer, image, **extra):
    row = {"index": index, "question": "What is shown?", "hint": "", "A": "cat", "B": "dog", "C": "bird", "D": ""}
    return {**row, "answer": answer, "category": "attribute", "l2-category": "perception", "image": image, **extra}


def test_mmbench_tsv_base64_images_rotations_and_language(tmp_path):
    image = base64.b64encode(png_bytes()).decode()
    rows = [
        mcq_row(7, "A", image),
        # VLMEvalKit's rotated copy: index + 1e6, options shifted, image by reference to row 7.
        {**mcq_row(1000007, "C", "7"), "A": "dog", "B": "bird", "C": "cat"},
    ]
    samples = load_benchmark("mmbench_zh", write_tsv(tmp_path / "mmbench_dev_cn.tsv", rows))
    assert [s.choices for s in samples] == [["cat", "dog", "bird"], ["dog", "bird", "cat"]]  # empty D dropped
    assert [s.answers for s in samples] == [["A"], ["C"]]
    assert samples[0].images == samples[1].images and decodes_to_image(samples[0].images[0])
    assert {s.meta["circular_group"] for s in samples} == {7}
    assert samples[0].language == "zh" and samples[0].category == "attribute"
    assert samples[0].meta["l2-category"] == "perception" and "hint" not in samples[0].meta


def test_mmmb_language_from_file_name_and_multi_image_cell(tmp_path):
    cell = json.dumps([base64.b64encode(png_bytes("red")).decode(), base64.b64encode(png_bytes("blue")).decode()])
    path = write_tsv(tmp_path / "mmmb_ar.tsv", [mcq_row(0, "B", cell)])
    [sample] = loaders.load_mmmb(path)
    assert sample.language == "ar" and sample.task == "mmmb"
    assert len(sample.images) == 2 and all(decodes_to_image(i) for i in sample.images)
    assert "circular_group" not in sample.meta


def test_seedbench2_plus_tsv(tmp_path):
    image = base64.b64encode(png_bytes()).decode()
    path = write_tsv(tmp_path / "SEEDBench2_Plus.tsv", [mcq_row(3, "C", image, category="chart")])
    [sample] = load_benchmark("seedbench2_plus", path)
    assert (sample.id, sample.answers, sample.category, sample.language) == ("3", ["C"], "chart", None)


def test_tsv_bad_base64_names_the_line(tmp_path):
    image = base64.b64encode(png_bytes()).decode()
    path = write_tsv(tmp_path / "mmmb_en.tsv", [mcq_row(0, "A", image), mcq_row(1, "A", "not base64!" * 10)])
    with pytest.raises(BenchmarkError, match=r"mmmb_en\.tsv, line 3: image cell is not valid base64"):
        loaders.load_mmmb(path)


def test_tsv_missing_column_names_it(tmp_path):
    row = mcq_row(0, "A", "x")
    del row["answer"]
    with pytest.raises(BenchmarkError, match=r"header: missing column\(s\) \['answer'\]"):
        loaders.load_mmbench(write_tsv(tmp_path / "mmbench_dev_en.tsv", [row]))


def test_tsv_answer_outside_the_options(tmp_path):
    image = base64.b64encode(png_bytes()).decode()
    with pytest.raises(BenchmarkError, match="line 2: answer should be one of the option letters, found 'D'"):
        loaders.load_mmmb(write_tsv(tmp_path / "mmmb_en.tsv", [mcq_row(0, "D", image)]))


# -------------------------------------------------------------------- text only


def test_mmlu_folder_of_subject_csvs(tmp_path):
    for subject in ("astronomy", "virology"):
        with (tmp_path / f"{subject}_test.csv").open("w", newline="") as handle:
            csv.writer(handle).writerow(["What is 2+2?", "3", "4", "5", "6", "B"])
    samples = load_benchmark("mmlu", tmp_path)
    assert [s.category for s in samples] == ["astronomy", "virology"]
    assert samples[0].choices == ["3", "4", "5", "6"] and samples[0].answers == ["B"]
    assert samples[0].images == []


def test_mmlu_short_row_names_file_and_row(tmp_path):
    path = tmp_path / "anatomy_test.csv"
    path.write_text("q,a,b,c,d,A\nq,a,b,c,A\n")
    with pytest.raises(BenchmarkError, match=r"anatomy_test\.csv, row 2: expected 6 cells"):
        loaders.load_mmlu(path)


def test_gsm8k_final_number_is_the_answer(tmp_path):
    record = {"question": "How many clips?", "answer": "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"}
    [sample] = load_benchmark("gsm8k", write_jsonl(tmp_path / "test.jsonl", [record]))
    assert sample.answers == ["72"]
    assert sample.meta["solution"].endswith("#### 72")


def test_gsm8k_without_final_line_is_an_error(tmp_path):
    with pytest.raises(BenchmarkError, match=r"line 1: answer has no '#### <number>'"):
        loaders.load_gsm8k(write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "answer": "72"}]))


def test_arc_numeric_labels_become_letters(tmp_path):
    record = {
        "id": "Mercury_7175875",
        "question": {
            "stem": "Which is a gas?",
            "choices": [{"text": t, "label": str(i + 1)} for i, t in enumerate("wxyz")],
        },
        "answerKey": "3",
    }
    [sample] = load_benchmark("arc_challenge", write_jsonl(tmp_path / "ARC-Challenge-Test.jsonl", [record]))
    assert (sample.id, sample.answers, sample.choices) == ("Mercury_7175875", ["C"], ["w", "x", "y", "z"])


def test_hellaswag_context_and_endings(tmp_path):
    record = {
        "ind": 24,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "endings": [
            "is using wrap.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing.",
        ],
        "label": 3,
    }
    [sample] = load_benchmark("hellaswag", write_jsonl(tmp_path / "hellaswag_val.jsonl", [record]))
    assert sample.question == "Roof shingle removal: A man is sitting on a roof. He"
    assert sample.answers == ["D"] and len(sample.choices) == 4
    assert sample.category == "Roof shingle removal"


def test_hellaswag_drops_wikihow_markers():
    assert loaders._hellaswag_text("Clean a grill [title] Scrub the grate [step] with a brush.") == (
        "Clean a grill. Scrub the grate with a brush."
    )


# --------------------------------------------------------------------- failures


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "q", "answer": \n')
    with pytest.raises(BenchmarkError, match=r"test\.jsonl, line 3: not valid JSON"):
        loaders.load_gsm8k(path)


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "val_v1.0.json"
    path.write_text('{"data": [\n  {"questionId": 1,}\n]}')
    with pytest.raises(BenchmarkError, match=r"val_v1\.0\.json, line 2 column"):
        loaders.load_docvqa(path)


def test_missing_field_names_entry_and_field(tmp_path):
    path = write_json(tmp_path / "test_human.json", [{"imgname": "a.png", "label": "1"}])
    with pytest.raises(BenchmarkError, match=r"entry 0: missing field 'query'"):
        loaders.load_chartqa(path)


def test_missing_image_says_where_it_looked(tmp_path):
    path = write_json(tmp_path / "test_human.json", [{"imgname": "a.png", "query": "q", "label": "1"}])
    with pytest.raises(BenchmarkError, match=r"image 'a\.png' not found under .*image_root"):
        loaders.load_chartqa(path)


def test_missing_file_and_unknown_benchmark(tmp_path):
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark("docvqa", tmp_path / "nope.json")
    with pytest.raises(BenchmarkError, match="unknown benchmark 'vqav3'; known: .*docvqa"):
        load_benchmark("vqav3", tmp_path)


def test_benchmark_error_is_a_typed_user_error():
    assert issubclass(BenchmarkError, JVLMError) and issubclass(BenchmarkError, ValueError)


# --------------------------------------------------------------------- registry


def test_registry_covers_every_claimed_benchmark_with_a_known_scorer():
    expected = set(VQA_AVERAGE) | {"realworldqa", "mmlu", "gsm8k", "arc_challenge", "hellaswag"}
    expected |= {f"{suite}_{lang}" for suite in ("mmmb", "mmbench") for lang in MULTILINGUAL_LANGUAGES}
    expected.add("synthetic")  # the held-out split of the project's own synthetic data (jvlm-demo)
    assert set(BENCHMARKS) == expected
    assert len(VQA_AVERAGE) == 8
    for name, spec in BENCHMARKS.items():
        assert spec.scorer in SCORERS, name
        assert spec.aggregate in {"mean", "circular", "ocrbench_total"}, name
    assert all(BENCHMARKS[f"mmbench_{lang}"].aggregate == "circular" for lang in MULTILINGUAL_LANGUAGES)


def test_registry_language_overrides_the_file_name(tmp_path):
    image = base64.b64encode(png_bytes()).decode()
    path = write_tsv(tmp_path / "mmmb.tsv", [mcq_row(0, "A", image)])
    [sample] = load_benchmark("mmmb_pt", path)
    assert sample.language == "pt"
