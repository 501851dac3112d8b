"""Metrics against values computed by hand from fixed confusion matrices."""
import math

import numpy as np
import pytest

from specaware.finetune.metrics import (HEADLINE, change_metrics, classification_metrics,
                                        confusion_matrix, format_mean_std, kappa,
                                        save_confusion_csv, summarize, task_metrics)

# rows = reference, columns = predicted
CM = np.array([[5, 1, 0],
               [2, 6, 2],
               [0, 0, 4]])


def test_confusion_matrix_counts_pairs_and_skips_unlabelled():
    pred = np.array([0, 1, 1, 2, 2, 0])
    ref = np.array([0, 1, -1, 2, 1, 0])
    cm = confusion_matrix(pred, ref, 3)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_confusion_matrix_rejects_labels_beyond_the_classes():
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix(np.array([0]), np.array([2]), 2)


def test_classification_metrics_match_hand_computation():
    m = classification_metrics(CM)
    assert m["oa"] == pytest.approx(15 / 20)
    assert m["per_class_acc"] == pytest.approx([5 / 6, 6 / 10, 4 / 4])
    assert m["aa"] == pytest.approx((5 / 6 + 0.6 + 1) / 3)
    pe = (6 * 7 + 10 * 7 + 4 * 6) / 400  # rows (6, 10, 4), columns (7, 7, 6)
    assert m["kappa"] == pytest.approx((0.75 - pe) / (1 - pe))
    assert m["iou"] == pytest.approx([5 / 8, 6 / 11, 4 / 6])
    assert m["miou"] == pytest.approx((5 / 8 + 6 / 11 + 4 / 6) / 3)
    assert m["f1"] == pytest.approx([10 / 13, 12 / 17, 8 / 10])


def test_absent_class_is_nan_and_left_out_of_means():
    cm = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    m = classification_metrics(cm)
    assert math.isnan(m["per_class_acc"][2]) and math.isnan(m["iou"][2])
    assert m["aa"] == pytest.approx((0.75 + 1.0) / 2)


def test_perfect_prediction_has_kappa_one():
    assert classification_metrics(np.diag([3, 4]))["kappa"] == pytest.approx(1.0)


def test_binary_change_metrics_match_hand_computation():
    # TN 50, FP 10, FN 5, TP 35
    m = change_metrics(np.array([[50, 10], [5, 35]]))
    assert m["precision"] == pytest.approx(35 / 45)
    assert m["recall"] == pytest.approx(35 / 40)
    assert m["f1"] == pytest.approx(70 / 85)
    assert m["iou"] == pytest.approx(35 / 50)
    pe = (60 * 55 + 40 * 45) / 100 ** 2
    assert m["kappa"] == pytest.approx((0.85 - pe) / (1 - pe))


def test_multiclass_change_merges_change_types_for_the_binary_numbers():
    cm = np.array([[50, 4, 6], [2, 10, 3], [3, 2, 20]])
    m = change_metrics(cm)
    tp, fp, fn = 10 + 3 + 2 + 20, 10, 5
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["multi_oa"] == pytest.approx(80 / 100)


def test_summarize_gives_mean_and_population_std():
    s = summarize([{"oa": 0.8, "per_class_acc": [1]}, {"oa": 0.9, "per_class_acc": [1]}])
    assert s["oa"] == pytest.approx((0.85, 0.05))
    assert "per_class_acc" not in s


def test_mean_f1_and_multiclass_change_aa_match_hand_computation():
    assert classification_metrics(CM)["mean_f1"] == pytest.approx((10 / 13 + 12 / 17 + 0.8) / 3)
    cm = np.array([[50, 4, 6], [2, 10, 3], [3, 2, 20]])
    assert change_metrics(cm)["multi_aa"] == pytest.approx((50 / 60 + 10 / 15 + 20 / 25) / 3)


def test_evaluate_accumulates_batches_and_skips_unlabelled_pixels():
    import torch

    from specaware.finetune.train import evaluate

    class Fixed(torch.nn.Module):   # logits are the batch's "scores"
        def forward(self, batch):
            return batch["scores"]

    batches = [{"scores": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "label": torch.tensor([0, 0])},
               {"scores": torch.tensor([[0.0, 2.0], [2.0, 0.0]]), "label": torch.tensor([1, -1])}]
    cm, m = evaluate(Fixed(), batches, "classification", 2, torch.device("cpu"))
    assert cm.tolist() == [[1, 1], [0, 1]] and m["oa"] == pytest.approx(2 / 3)


def test_every_key_the_reports_read_is_present():
    # runner / kshot / demo tables read these names; a renamed key reads as a missing metric
    assert set(classification_metrics(CM)) == {"oa", "aa", "kappa", "per_class_acc", "iou",
                                                "miou", "f1", "mean_f1", "support"}
    assert classification_metrics(CM)["support"] == [6, 10, 4]
    multi = change_metrics(np.array([[50, 4, 6], [2, 10, 3], [3, 2, 20]]))
    assert set(multi) == {"oa", "kappa", "precision", "recall", "f1", "iou", "multi_oa",
                          "multi_aa", "multi_kappa", "multi_miou", "multi_mean_f1"}
    assert set(change_metrics(np.array([[5, 1], [2, 3]]))) == {
        "oa", "kappa", "precision", "recall", "f1", "iou"}
    assert HEADLINE == {"classification": "oa", "segmentation": "miou", "change": "kappa"}


def test_change_numbers_match_hand_computation_for_the_merged_classes():
    cm = np.array([[50, 4, 6], [2, 10, 3], [3, 2, 20]])
    m = change_metrics(cm)
    # TN 50, FP 10, FN 5, TP 35 after merging classes 1 and 2
    assert m["oa"] == pytest.approx(85 / 100)
    assert m["precision"] == pytest.approx(35 / 45) and m["recall"] == pytest.approx(35 / 40)
    assert m["iou"] == pytest.approx(35 / 50)
    full = classification_metrics(cm)
    assert m["multi_kappa"] == pytest.approx(full["kappa"])
    assert m["multi_miou"] == pytest.approx(full["miou"])
    assert m["multi_mean_f1"] == pytest.approx(full["mean_f1"])


def test_task_metrics_picks_the_change_numbers_only_for_change():
    cm = np.array([[5, 1], [2, 3]])
    assert task_metrics(cm, "change") == change_metrics(cm)
    assert task_metrics(cm, "segmentation") == classification_metrics(cm)


def test_kappa_of_an_empty_matrix_is_nan_and_of_a_single_class_is_one():
    assert math.isnan(kappa(np.zeros((2, 2))))
    assert kappa(np.array([[7, 0], [0, 0]])) == 1.0       # p_e = 1: chance explains it all
    assert math.isnan(classification_metrics(np.zeros((2, 2), dtype=int))["miou"])


def test_summary_cells_are_percent_by_default():
    assert format_mean_std(0.9123, 0.0051) == "91.23 ± 0.51"
    assert format_mean_std(0.9123, 0.0051, percent=False) == "0.91 ± 0.01"
    assert format_mean_std(float("nan"), 0.0) == "nan"
    assert summarize([]) == {}


def test_confusion_csv_has_named_reference_rows_and_predicted_columns(tmp_path):
    save_confusion_csv(np.array([[3, 1], [0, 2]]), tmp_path / "a.csv", ["water", "crop"])
    assert (tmp_path / "a.csv").read_text().splitlines() == [
        "reference\\predicted,water,crop", "water,3,1", "crop,0,2"]
    save_confusion_csv(np.array([[1]]), tmp_path / "b.csv")
    assert (tmp_path / "b.csv").read_text().splitlines() == ["reference\\predicted,0", "0,1"]


def test_predictions_beyond_the_classes_count_as_the_last_class():
    cm = confusion_matrix(np.array([5, -2]), np.array([1, 0]), 2)
    assert cm.tolist() == [[1, 0], [0, 1]]
