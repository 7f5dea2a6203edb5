"""Snakemake adapter: rule error_by_layer → preimage.figures.error_by_layer."""
from preimage import logs

with logs.job(snakemake):
    import pandas as pd
    from preimage import figures

    perturbation = pd.read_csv(snakemake.input.perturbation[0]) if snakemake.input.perturbation else None
    figures.error_by_layer(pd.read_csv(snakemake.input.table), snakemake.output[0], perturbations=perturbation)
