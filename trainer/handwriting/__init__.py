"""Handwriting beyond MNIST: digits in writing styles MNIST's writers rarely used (European 1s with a flag
and a foot, crossed 7s, 9s with flat or hooked tops and tails, open 4s), rendered from freely licensed
handwriting fonts and single-stroke pen fonts, and drawn on purpose where fonts lack a style. Every
sample passes through the client's own normaliser, so training sees what serving sees.

`make handwriting-data` builds data/handwriting/ from the sources in sources.py (`python -m
trainer.handwriting`); nothing is downloaded at training time.
"""
