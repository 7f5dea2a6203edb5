"""Snakemake adapter: rule interpolation → preimage.analyses.interpolation."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses

    common = snakemake.params.common
    analyses.interpolation(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                           snakemake.output.strips, snakemake.output.figure, pairs=snakemake.params.pairs,
                           steps=snakemake.params.steps, n_show=common["n_show"], device=common["device"])
