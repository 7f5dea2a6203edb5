"""Snakemake adapter: rule errors_table → preimage.figures.errors_table."""
import pandas as pd

from preimage import figures, logs

logs.setup(snakemake.log[0])
figures.errors_table([pd.read_csv(p) for p in snakemake.input.errors], snakemake.output.csv, snakemake.output.md)
