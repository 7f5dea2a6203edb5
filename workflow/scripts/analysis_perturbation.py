"""Snakemake adapter: rule perturbation → preimage.experiments.perturbation."""
from preimage import devices, experiments, logs

logs.setup(snakemake.log[0])
devices.setup_snakemake_job(snakemake)
common = snakemake.params.common
experiments.perturbation(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                         snakemake.input.images, snakemake.output.csv, snakemake.output.figure,
                         fraction=snakemake.params.fraction, n_show=common["n_show"], seed=common["seed"],
                         device=common["device"])
