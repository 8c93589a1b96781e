"""Accuracy of an estimator on real annotated data, the numbers ``posestream eval`` and training print.

coco.py: COCO keypoint AP/AR with pycocotools. lsp.py: LSP / LSPET single-person PCK@0.2 and strict
PCP@0.5, and the LSP-format reader. common.py: what both share (the Estimator callable they run,
running it over image files, text tables).
"""
