"""Snakemake adapter: rule error_by_layer → preimage.figures.error_by_layer."""
import pandas as pd

from preimage import figures, logs

logs.setup(snakemake.log[0])
perturbation = pd.read_csv(snakemake.input.perturbation[0]) if snakemake.input.perturbation else None
figures.error_by_layer(pd.read_csv(snakemake.input.table), snakemake.output[0], perturbations=perturbation)
