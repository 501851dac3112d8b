"""Downstream heads over a pretrained encoder: scene/pixel classification, segmentation, change."""
from specaware.finetune.heads.change import ChangeDetector
from specaware.finetune.heads.classify import SceneClassifier
from specaware.finetune.heads.common import set_trainable
from specaware.finetune.heads.segment import Segmenter

__all__ = ["SceneClassifier", "Segmenter", "ChangeDetector", "set_trainable"]
