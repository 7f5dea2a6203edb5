"""Snakemake adapter: rule perturbation → preimage.analyses.perturbation."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses

    common = snakemake.params.common
    analyses.perturbation(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                          snakemake.input.images, snakemake.output.csv, snakemake.output.figure,
                          fraction=snakemake.params.fraction, n_show=common["n_show"], seed=common["seed"],
                          device=common["device"])
