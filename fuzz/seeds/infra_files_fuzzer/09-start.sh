#!/bin/sh
# Local notebook: default ip (localhost) and a generated token.
jupyter notebook --no-browser --port 8888 --notebook-dir ~/notebooks
jupyter nbconvert --to html report.ipynb
