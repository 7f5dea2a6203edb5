"""Snakemake adapter: rule interpolation_overview → preimage.experiments.interpolation_overview."""
from preimage import experiments, logs

logs.setup(snakemake.log[0])
experiments.interpolation_overview(dict(zip(snakemake.params.representations, snakemake.input)), snakemake.output[0])
