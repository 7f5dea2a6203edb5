"""Snakemake adapter: rule interpolation → preimage.experiments.interpolation."""
from preimage import devices, experiments, logs

logs.setup(snakemake.log[0])
devices.setup_snakemake_job(snakemake)
common = snakemake.params.common
experiments.interpolation(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                          snakemake.output.strips, snakemake.output.figure, pairs=snakemake.params.pairs,
                          steps=snakemake.params.steps, n_show=common["n_show"], device=common["device"])
